/**
 * A TCP proxy on 127.0.0.1 in front of a server (Redis in the tests), to take the server away
 * from a client without stopping it: `cut()` destroys every open connection and closes every new
 * one at once, `restore()` lets connections through again. `pause()` holds what clients send
 * (a stalled network: their connections stay open, nothing reaches the server) until `resume()`.
 * No dependency beyond node:net.
 */
import net from "node:net";

export class TcpProxy {
	private server!: net.Server;
	private readonly sockets = new Set<net.Socket>();
	/** Client side of each open connection, and the server side it forwards to. */
	private readonly pairs = new Map<net.Socket, net.Socket>();
	private isCut = false;
	private isPaused = false;

	private constructor(
		private readonly targetHost: string,
		private readonly targetPort: number,
	) {}

	/** Listens on a free port of 127.0.0.1 and forwards to `target`. */
	static async start(target: { host: string; port: number }): Promise<TcpProxy> {
		const proxy = new TcpProxy(target.host, target.port);
		proxy.server = net.createServer(client => proxy.accept(client));
		await new Promise<void>((resolve, reject) => {
			proxy.server.once("error", reject);
			proxy.server.listen(0, "127.0.0.1", () => resolve());
		});
		return proxy;
	}

	get port(): number {
		return (this.server.address() as net.AddressInfo).port;
	}

	/** The proxy's address as a URL of the target's scheme, e.g. redis://127.0.0.1:<port>. */
	url(scheme: string): string {
		return `${scheme}://127.0.0.1:${this.port}`;
	}

	cut(): void {
		this.isCut = true;
		for (const socket of this.sockets) socket.destroy();
		this.sockets.clear();
		this.pairs.clear();
	}

	restore(): void {
		this.isCut = false;
	}

	/** Stops forwarding what clients send; what they send meanwhile is held, in order. */
	pause(): void {
		this.isPaused = true;
		for (const [client, upstream] of this.pairs) {
			client.unpipe(upstream);
			client.pause();
		}
	}

	/** Forwards what was held, then everything else as before. */
	resume(): void {
		this.isPaused = false;
		for (const [client, upstream] of this.pairs) client.pipe(upstream);
	}

	/** Bytes clients sent since `pause()` that the proxy holds. */
	get heldBytes(): number {
		let n = 0;
		for (const client of this.pairs.keys()) n += client.readableLength;
		return n;
	}

	async close(): Promise<void> {
		this.cut();
		await new Promise<void>(resolve => this.server.close(() => resolve()));
	}

	private accept(client: net.Socket): void {
		if (this.isCut) {
			client.destroy();
			return;
		}
		const upstream = net.connect(this.targetPort, this.targetHost);
		this.sockets.add(client);
		this.sockets.add(upstream);
		this.pairs.set(client, upstream);
		const end = () => {
			client.destroy();
			upstream.destroy();
			this.sockets.delete(client);
			this.sockets.delete(upstream);
			this.pairs.delete(client);
		};
		client.on("error", end).on("close", end);
		upstream.on("error", end).on("close", end);
		client.setNoDelay(true);
		upstream.setNoDelay(true);
		if (this.isPaused) client.pause();
		else client.pipe(upstream);
		upstream.pipe(client);
	}
}
