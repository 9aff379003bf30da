"""The EU DCC gateway (DCCG): revocation batches for now (upload, delete, list, download).

``client`` is the real HTTP client (mutual TLS with the country's TLS authentication
certificate); ``revocation`` builds the batches from the ledger, signs them with the upload
certificate (CMS) and keeps the ledger's record of what the gateway holds; ``simulator``
stands in for the gateway beside its interface, with the gateway's own rules.
"""
