"""The REST API: FastAPI routers, request/response models and authentication."""
