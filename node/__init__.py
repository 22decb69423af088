"""What every node is: configuration, the HTTP core (server and pooled client), signed internal RPC, the storage servers, the service supervisor and the cluster client."""
