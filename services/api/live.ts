/**
 * The open notification streams of this gateway node (GET /api/notifications/stream), by user.
 * The notifications service broadcasts each stored notification (NOTIFICATION_STORED); every
 * gateway node writes it to the streams of the user it belongs to, as a Server-Sent Event.
 *
 * Authentication is the bearer token of every other route: the storefront reads the stream with
 * fetch() (which sends the Authorization header) rather than EventSource (which cannot), so no
 * token ever goes into a URL and no cookie is needed. See the README, "Live notifications".
 */
import { PassThrough } from "node:stream";

export interface StreamOptions {
	/** A comment line this often keeps proxies and idle timers from closing a quiet stream. */
	heartbeatMs: number;
	/** What the browser's reconnect delay should be (the SSE `retry:` field). */
	retryMs: number;
}

export class NotificationHub {
	private readonly streams = new Map<number, Set<PassThrough>>();

	constructor(private readonly options: StreamOptions) {}

	/** A new stream for a user: a readable the gateway pipes to the response; it leaves the hub when closed. */
	open(userId: number): PassThrough {
		const stream = new PassThrough();
		const own = this.streams.get(userId) ?? new Set<PassThrough>();
		own.add(stream);
		this.streams.set(userId, own);
		// Headers and a first line at once, so the client knows the stream is open.
		stream.write(`retry: ${this.options.retryMs}\n: connected\n\n`);
		const heartbeat = setInterval(() => stream.write(": heartbeat\n\n"), this.options.heartbeatMs);
		heartbeat.unref();
		stream.once("close", () => {
			clearInterval(heartbeat);
			own.delete(stream);
			if (own.size === 0 && this.streams.get(userId) === own) this.streams.delete(userId);
		});
		return stream;
	}

	/** Writes an event to every open stream of the user; answers how many streams got it. */
	push(userId: number, event: string, data: { id?: string }): number {
		const own = this.streams.get(userId);
		if (!own) return 0;
		const frame = `${data.id ? `id: ${data.id}\n` : ""}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
		for (const stream of own) stream.write(frame);
		return own.size;
	}

	/** How many streams are open (all users). */
	get size(): number {
		let n = 0;
		for (const own of this.streams.values()) n += own.size;
		return n;
	}

	/** Ends every stream: the HTTP server can close only once they are done. */
	closeAll(): void {
		for (const own of this.streams.values()) for (const stream of own) stream.end();
		this.streams.clear();
	}
}
