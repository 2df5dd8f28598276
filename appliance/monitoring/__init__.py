"""Health of the appliance: liveness and readiness now; probes, uptime and the status page later."""
