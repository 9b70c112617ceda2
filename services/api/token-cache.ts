/**
 * The gateway's memory of the tokens users.resolveToken accepted. Without it every authenticated
 * request made one more call (to users, over the transporter in the cluster) and one more SELECT,
 * for an answer that changes only when a user is removed from the users database or their role is
 * edited there (no action of ours does either). An accepted token is answered from here for
 * `ttlMs` (AUTH_CACHE_TTL), never past the token's own expiry; a refused one is always asked
 * again. Per node, in memory, at most `maxEntries` tokens (the oldest forgotten first). A TTL of 0
 * turns it off.
 */
import jwt from "jsonwebtoken";

export interface CachedUser {
	id: number;
	role: "customer" | "admin";
}

interface Entry {
	user: CachedUser;
	until: number;
}

/** The `exp` claim (ms since the epoch) of a JWT, without verifying it: users did, for this very text. */
function expiresAt(token: string): number | undefined {
	const payload = jwt.decode(token);
	const exp = typeof payload === "object" ? payload?.exp : undefined;
	return typeof exp === "number" && Number.isFinite(exp) ? exp * 1000 : undefined;
}

export class TokenCache {
	private readonly entries = new Map<string, Entry>();

	constructor(
		private readonly ttlMs: number,
		private readonly maxEntries = 10_000,
		private readonly now: () => number = Date.now,
	) {}

	get size(): number {
		return this.entries.size;
	}

	/** The user of a token accepted within the TTL and not expired since; undefined otherwise. */
	get(token: string): CachedUser | undefined {
		const entry = this.entries.get(token);
		if (!entry) return undefined;
		// A copy: the caller's ctx.meta.user is its own.
		if (entry.until > this.now()) return { ...entry.user };
		this.entries.delete(token);
		return undefined;
	}

	/** Remembers what users.resolveToken answered for `token`. A token without `exp` is not kept. */
	set(token: string, user: CachedUser): void {
		if (this.ttlMs <= 0) return;
		const exp = expiresAt(token);
		if (exp === undefined) return;
		const now = this.now();
		const until = Math.min(now + this.ttlMs, exp);
		if (until <= now) return;
		this.entries.delete(token);
		if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
		this.entries.set(token, { user: { id: user.id, role: user.role }, until });
	}
}
