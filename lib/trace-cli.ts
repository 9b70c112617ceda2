/**
 * `npm run trace`: the traces the gateway keeps, through its admin API.
 *
 *   npm run trace                 the newest traces (limit 20)
 *   npm run trace -- <traceId>    one trace as a tree of spans: name, service, node, start offset, duration
 *
 * GATEWAY_URL (default http://localhost:$PORT, PORT default 3000); a token from TOKEN, or from
 * logging in as ADMIN_EMAIL (default admin@carsi.local) with ADMIN_PASSWORD.
 */
import type { CollectedSpan } from "./tracing";

const base = process.env.GATEWAY_URL || `http://localhost:${process.env.PORT || 3000}`;

async function request<T>(path: string, token?: string, body?: unknown): Promise<T> {
	const res = await fetch(base + path, {
		method: body ? "POST" : "GET",
		headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { "content-type": "application/json" } : {}) },
		body: body ? JSON.stringify(body) : undefined,
	});
	const text = await res.text();
	if (!res.ok) throw new Error(`${path}: ${res.status} ${text}`);
	return JSON.parse(text) as T;
}

async function token(): Promise<string> {
	if (process.env.TOKEN) return process.env.TOKEN;
	if (!process.env.ADMIN_PASSWORD) throw new Error("Set TOKEN, or ADMIN_PASSWORD (and ADMIN_EMAIL) of an admin");
	const email = process.env.ADMIN_EMAIL || "admin@carsi.local";
	return (await request<{ token: string }>("/api/users/login", undefined, { email, password: process.env.ADMIN_PASSWORD })).token;
}

function printTree(spans: CollectedSpan[]): void {
	const ids = new Set(spans.map(s => s.id));
	const children = new Map<string | null, CollectedSpan[]>();
	for (const s of spans) {
		const parent = s.parentId && ids.has(s.parentId) ? s.parentId : null;
		children.set(parent, [...(children.get(parent) ?? []), s]);
	}
	const t0 = Math.min(...spans.map(s => s.startTime));
	const walk = (parent: string | null, depth: number) => {
		for (const s of children.get(parent) ?? []) {
			const label = `${"  ".repeat(depth)}${s.name}`;
			const where = `${s.service ?? "-"} @ ${s.nodeId}`;
			const error = s.error ? `  ERROR ${s.error.name}: ${s.error.message}` : "";
			console.log(`${label.padEnd(48)} ${where.padEnd(34)} +${(s.startTime - t0).toFixed(1).padStart(7)} ms ${s.duration.toFixed(1).padStart(8)} ms${error}`);
			walk(s.id, depth + 1);
		}
	};
	walk(null, 0);
}

async function main(): Promise<void> {
	const traceId = process.argv[2];
	const auth = await token();
	if (!traceId) {
		const { items } = await request<{ items: Array<{ traceId: string; name: string; startTime: number; duration: number; spans: number }> }>("/api/admin/traces?limit=20", auth);
		for (const t of items)
			console.log(`${new Date(t.startTime).toISOString()}  ${t.traceId}  ${t.name.padEnd(32)} ${String(t.spans).padStart(3)} spans ${t.duration.toFixed(1).padStart(8)} ms`);
		return;
	}
	const trace = await request<{ traceId: string; spans: CollectedSpan[] }>(`/api/admin/traces/${encodeURIComponent(traceId)}`, auth);
	console.log(`trace ${trace.traceId}: ${trace.spans.length} spans`);
	printTree(trace.spans);
}

main().catch(err => {
	console.error((err as Error).message);
	process.exit(1);
});
