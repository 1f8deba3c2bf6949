"""systemd service integration, without libsystemd: both protocols are small and stable.

* ``dkimd.systemd.notify``: sd_notify(3) datagrams to ``NOTIFY_SOCKET`` (READY=1,
  RELOADING=1, STOPPING=1, STATUS=, WATCHDOG=1) and the watchdog interval
  (``WATCHDOG_USEC``/``WATCHDOG_PID``).
* ``dkimd.systemd.activation``: sd_listen_fds(3) sockets (``LISTEN_PID``/``LISTEN_FDS``/
  ``LISTEN_FDNAMES``) and which of them is the milter socket the configuration names.
* ``dkimd.systemd.service``: what the daemon tells systemd over its life (start, reload,
  stop, counters), one object the daemon calls at those points.

Every call is a no-op when dkimd does not run under systemd (the variables are unset).
"""
