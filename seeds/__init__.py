"""The seed material's published results and facts (see README.md): typed, loaded from the files beside this one."""
