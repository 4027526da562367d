"""genqa: fine-tuning recipes for question answering."""
