"""Texts -> sentence windows -> entities with offsets: the path serving, extraction and the
corpus readers share. `text` holds the splitter (tokens, sentences, windows and their offset
maps); it knows nothing of Ray, MLflow or models."""
