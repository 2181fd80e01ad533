#!/usr/bin/env python3
"""Train multiple users concurrently using async API."""
import os
import sys
import requests
import time
from concurrent.futures import ThreadPoolExecutor

# The server: the first argument, else $TINKERBELL_URL, else the default
# address of `tinkerbell serve`.
BASE_URL = (sys.argv[1] if len(sys.argv) > 1
            else os.environ.get("TINKERBELL_URL", "http://localhost:8000"))

def retrieve_future(future_id, timeout=60):
    """Wait for future to complete and return result."""
    start = time.time()
    while True:
        response = requests.post(f"{BASE_URL}/retrieve_future", json={
            "request_id": future_id
        })

        if response.status_code == 200:
            return response.json()
        elif response.status_code == 202:
            if time.time() - start > timeout:
                raise TimeoutError(f"Future {future_id} timed out")
            time.sleep(0.5)
        else:
            raise Exception(f"Error: {response.text}")

def train_user(user_name):
    """Train a single user's adapter asynchronously."""
    print(f"[{user_name}] Starting...")

    # 1. Create adapter (async)
    response = requests.post(f"{BASE_URL}/api/v1/add_lora_async", json={
        "base_model": "base",
        "rank": 16,
        "alpha": 32
    })
    future_id = response.json()["request_id"]
    result = retrieve_future(future_id)
    model_id = result["model_id"]
    print(f"[{user_name}] Created adapter: {model_id}")

    # 2. Training data
    training_data = [[
        {"role": "user", "content": f"Hello {user_name}!"},
        {"role": "assistant", "content": f"Hi {user_name}!"}
    ]]

    # 3. Train (async)
    for step in range(3):
        # Forward-backward (async)
        response = requests.post(f"{BASE_URL}/api/v1/forward_backward_async", json={
            "model_id": model_id,
            "data": training_data,
            "loss_fn": "cross_entropy"
        })
        future_id = response.json()["request_id"]
        result = retrieve_future(future_id)
        print(f"[{user_name}] Step {step+1}: Loss={result['loss']:.4f}")

        # Optimizer step (async)
        response = requests.post(f"{BASE_URL}/api/v1/optim_step_async", json={
            "model_id": model_id,
            "adam_params": {"learning_rate": 0.001}
        })
        retrieve_future(response.json()["request_id"])

    print(f"[{user_name}] Done!")

# Train 3 users concurrently
with ThreadPoolExecutor(max_workers=3) as executor:
    users = ["Alice", "Bob", "Carol"]
    executor.map(train_user, users)

print("All users trained!")
