"""Training scripts and data utilities (stage-1 tokenizer, stage-2 transformer)."""
