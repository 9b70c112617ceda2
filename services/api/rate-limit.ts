/**
 * Fixed-window counters for the login rate limit. In the distributed mode they live in Redis, so
 * the limit holds across every gateway; without Redis (embedded default, or Redis down) they are
 * kept in this process, which is the best that can be done without a shared store.
 */
import Redis from "ioredis";

export interface Hit {
	count: number;
	/** Milliseconds until this window ends. */
	resetMs: number;
}

export interface WindowStore {
	hit(key: string, windowMs: number): Promise<Hit>;
	close(): Promise<void>;
}

export class MemoryWindowStore implements WindowStore {
	private readonly windows = new Map<string, { count: number; resetAt: number }>();
	private sweeps = 0;

	async hit(key: string, windowMs: number): Promise<Hit> {
		const now = Date.now();
		// Drop ended windows now and then, so a stream of distinct keys cannot grow the map forever.
		if (++this.sweeps % 1000 === 0) for (const [k, w] of this.windows) if (w.resetAt <= now) this.windows.delete(k);
		let w = this.windows.get(key);
		if (!w || w.resetAt <= now) {
			w = { count: 0, resetAt: now + windowMs };
			this.windows.set(key, w);
		}
		w.count++;
		return { count: w.count, resetMs: w.resetAt - now };
	}

	async close(): Promise<void> {
		this.windows.clear();
	}
}

// INCR and the window's expiry in one step: no key is left without an expiry.
const HIT_SCRIPT = `
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return { count, redis.call('PTTL', KEYS[1]) }`;

export class RedisWindowStore implements WindowStore {
	private readonly client: Redis;
	private readonly fallback = new MemoryWindowStore();
	private degraded = false;

	constructor(
		url: string,
		private readonly prefix: string,
		private readonly log: { warn(msg: string): void; info(msg: string): void },
	) {
		this.client = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 1000, lazyConnect: false });
		this.client.on("error", () => undefined);
		this.client.on("ready", () => {
			if (this.degraded) this.log.info("Rate-limit store back on Redis.");
			this.degraded = false;
		});
	}

	async hit(key: string, windowMs: number): Promise<Hit> {
		try {
			const [count, ttl] = (await this.client.eval(HIT_SCRIPT, 1, this.prefix + key, windowMs)) as [number, number];
			return { count, resetMs: ttl > 0 ? ttl : windowMs };
		} catch (err) {
			if (!this.degraded) this.log.warn(`Rate-limit store falls back to this process: ${(err as Error).message}`);
			this.degraded = true;
			return this.fallback.hit(key, windowMs);
		}
	}

	async close(): Promise<void> {
		await this.client.quit().catch(() => this.client.disconnect());
	}
}
