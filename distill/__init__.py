"""Distillation recipe for lipforce: procedural talking faces with exact ground truth, and measures."""
