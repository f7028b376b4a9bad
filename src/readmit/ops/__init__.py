"""Operations: deploying the service (blue/green, processes) and the audit log."""
