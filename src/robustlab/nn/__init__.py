"""Neural-network parts: 1-Lipschitz layers, activations, blocks and the model zoo."""
