"""The seed guide's own Python code, copied unchanged, so tests can prove the simulator
(and callbridge) work with exactly what the guide tells clients to run.

- `CentralizedCallingClient`: section "API Integration Changes / 1. Update Your API Client".
- `verify_callback_signature`: section "Security Considerations / 1. Callback Security"
  (only the function; the Flask route around it is not needed). Its imports are the
  ones that section's snippet starts with, minus Flask.

Do not edit the code below the marker: test_sim_seed_client.py checks it is still
byte-for-byte the guide's text when the guide is available.
"""
# --- verbatim from the seed guide below this line ---
import requests
import json
from datetime import datetime

class CentralizedCallingClient:
    def __init__(self, base_url, api_key):
        self.base_url = base_url.rstrip('/')
        self.api_key = api_key
        self.headers = {
            'X-API-KEY': api_key,
            'Content-Type': 'application/json'
        }
    
    def submit_call_batch(self, batch_id, phone_numbers, custom_data=None):
        """Submit a batch of phone numbers for calling"""
        data = []
        for phone in phone_numbers:
            entry = {"phone_number": phone}
            if custom_data:
                entry["custom_data"] = custom_data
            data.append(entry)
        
        payload = {
            "batch_id": batch_id,
            "data": data
        }
        
        response = requests.post(
            f"{self.base_url}/api/v1/queues/insertdataincallqueue/",
            headers=self.headers,
            json=payload
        )
        return response.json()
    
    def get_call_status(self, batch_id):
        """Get status of calls in a batch"""
        response = requests.get(
            f"{self.base_url}/api/v1/queues/batch-status/{batch_id}",
            headers=self.headers
        )
        return response.json()
    
    def dispatch_calls(self):
        """Dispatch queued calls"""
        response = requests.post(
            f"{self.base_url}/api/v1/controls/dispatch-calls",
            headers=self.headers
        )
        return response.json()


import hmac
import hashlib

def verify_callback_signature(payload, signature, secret):
    """Verify callback signature"""
    expected_signature = hmac.new(
        secret.encode('utf-8'),
        payload.encode('utf-8'),
        hashlib.sha256
    ).hexdigest()
    
    return hmac.compare_digest(signature, expected_signature)
