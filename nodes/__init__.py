"""One module per scenewatch process; each is a thin loop over `pipeline`."""
