//! Container stdio: fifos, `file://` and `binary://` log URIs, null IO, pty via console socket.
