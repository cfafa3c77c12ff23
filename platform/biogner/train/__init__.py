"""Fine-tuning on Ray Train + DeepSpeed (+PEFT), tracked in MLflow."""
