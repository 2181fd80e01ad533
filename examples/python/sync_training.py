#!/usr/bin/env python3
"""Sync training - simple and straightforward."""
import os
import sys
import requests

# The server: the first argument, else $TINKERBELL_URL, else the default
# address of `tinkerbell serve`.
BASE_URL = (sys.argv[1] if len(sys.argv) > 1
            else os.environ.get("TINKERBELL_URL", "http://localhost:8000"))

# 1. Create LoRA adapter (sync)
response = requests.post(f"{BASE_URL}/api/v1/add_lora", json={
    "base_model": "base",
    "rank": 16,
    "alpha": 32
})
model_id = response.json()["model_id"]
print(f"Created adapter: {model_id}")

# 2. Training data
training_data = [[
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi there!"}
]]

# 3. Train (sync - blocks until complete)
for step in range(5):
    print(f"Step {step+1}/5...")

    # Forward-backward (blocks)
    response = requests.post(f"{BASE_URL}/api/v1/forward_backward", json={
        "model_id": model_id,
        "data": training_data,
        "loss_fn": "cross_entropy"
    })
    loss = response.json()["loss"]
    print(f"  Loss: {loss:.4f}")

    # Optimizer step (blocks)
    requests.post(f"{BASE_URL}/api/v1/optim_step", json={
        "model_id": model_id,
        "adam_params": {"learning_rate": 0.001}
    })
    print(f"  Optimizer applied")

print("Done!")
