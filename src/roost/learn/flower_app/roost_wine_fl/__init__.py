"""The Flower App of Roost's federated wine task; runs in the Flower venv (numpy, xgboost, flwr only)."""
