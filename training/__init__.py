"""Gluon CNN training and fine-tuning (MXNet + GluonCV); also the SageMaker script-mode entry point."""
