"""The inspection station (torch-free): camera sources, the loop, alarms, evidence, systemd service, doctor."""
