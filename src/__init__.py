"""toonforge: photos of faces to cartoons, as a chain of Hydra + Lightning stages."""
