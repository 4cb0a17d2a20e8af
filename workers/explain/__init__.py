"""Captum explanations, per modality."""
