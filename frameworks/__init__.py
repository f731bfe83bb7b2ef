"""Framework adapters: one folder per framework behind one small interface."""
