#!/usr/bin/env python3
"""Async training - maximum throughput."""
import os
import sys
import requests
import time

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
            # Still pending
            if time.time() - start > timeout:
                raise TimeoutError(f"Future {future_id} timed out")
            time.sleep(0.5)
        else:
            raise Exception(f"Error: {response.text}")

# 1. Create LoRA adapter
response = requests.post(f"{BASE_URL}/api/v1/add_lora_async", json={
    "base_model": "base",
    "rank": 16,
    "alpha": 32
})
future_id = response.json()["request_id"]
model_id = retrieve_future(future_id)["model_id"]
print(f"Created adapter: {model_id}")

# 2. Training data
training_data = [[
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi there!"}
]]

# 3. ASYNC Training - submit all forward-backward passes in parallel!
print("Submitting 5 training steps asynchronously...")
fwdbwd_futures = []

for step in range(5):
    # Submit forward-backward (returns immediately!)
    response = requests.post(f"{BASE_URL}/api/v1/forward_backward_async", json={
        "model_id": model_id,
        "data": training_data,
        "loss_fn": "cross_entropy"
    })
    fwdbwd_futures.append(response.json()["request_id"])
    print(f"  Submitted step {step+1}")

print("All steps submitted! Waiting for results...")

# 4. Retrieve results as they complete
for i, future_id in enumerate(fwdbwd_futures, 1):
    result = retrieve_future(future_id)
    print(f"  Step {i} complete - Loss: {result['loss']:.4f}")

    # Apply optimizer step
    response = requests.post(f"{BASE_URL}/api/v1/optim_step_async", json={
        "model_id": model_id,
        "adam_params": {"learning_rate": 0.001}
    })
    optim_future = response.json()["request_id"]
    retrieve_future(optim_future)
    print(f"  Step {i} optimizer applied")

print("Done!")
