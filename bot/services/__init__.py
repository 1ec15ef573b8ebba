"""The services: the only deciders. Each module is one noun (deployments, tokens, the queries the
API and the page share); each function checks what it is asked against the manifests and the
state machine, writes the records in one transaction, and queues the work after the commit."""
