//! Wires stores, services and sockets together; start-up and shutdown.
