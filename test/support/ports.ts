/** Ports for the processes of tests and of the bench; no dependencies, so a bare baseline can load it. */

/**
 * A random first port for `span` listening ports of a test's processes, below Linux's ephemeral
 * range (32768-60999 here): a port in that range may already be the local end of some outgoing
 * connection (to PostgreSQL, RabbitMQ, Redis…), and the node then fails with EADDRINUSE. Skips
 * RabbitMQ's inter-node port (25672), the one server port between 20000 and 32768 on this machine.
 */
export function testPorts(span = 1): number {
	for (;;) {
		const first = 20_000 + Math.floor(Math.random() * (12_700 - span));
		if (first + span <= 25_672 || first > 25_672) return first;
	}
}
