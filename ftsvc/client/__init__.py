"""The user's side of `ftsvc`: commands that talk HTTP to a running service (any server,
not only this machine's): upload and list files, create, follow and steer jobs, download
what they trained. Built with typer (commands) and rich (tables, progress bars, the live
view of a job); `ftsvc.cli.main` hands them their arguments."""

# The client commands, as `ftsvc --help` lists them beside the service's (typer itself
# is loaded only when one runs).
COMMANDS = {
    "files": "upload, list and show training files",
    "jobs": "create, list, show, watch, cancel, pause and resume fine-tuning jobs",
    "download": "a job's adapter or a checkpoint's, its sha256 checked",
    "chat": "chat with a base or fine-tuned model (interactive, or one message with -m)",
}
