"""The order role: purchases, recorded on every order replica under cluster-unique ids."""
