"""Data sets kept outside the configuration's files: SQL (`dsn:`), LDAP, memcached, Redis.

Each back end is a module implementing `dkimd.stores.base.RemoteStore`; the cache,
coalescing and outage handling in front of them belong to the data set layer, not here.
"""
