"""rnnscope's character-level recurrent language model, in plain NumPy."""
