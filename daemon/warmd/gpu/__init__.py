"""GPU support. Importing this package never imports cupy or touches CUDA."""
