"""Ways to run the deployments declared in prefect.yaml."""
