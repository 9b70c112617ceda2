/** A small HTTP client for tests: JSON in and out, status and headers kept. */
export interface Res<T = any> {
	status: number;
	headers: Headers;
	body: T;
	text: string;
}

export async function http<T = any>(
	base: string,
	method: string,
	path: string,
	opts: { body?: unknown; raw?: string; token?: string; headers?: Record<string, string> } = {},
): Promise<Res<T>> {
	const headers: Record<string, string> = { ...(opts.headers ?? {}) };
	if (opts.token) headers.authorization = `Bearer ${opts.token}`;
	let body: string | undefined;
	if (opts.raw !== undefined) body = opts.raw;
	else if (opts.body !== undefined) body = JSON.stringify(opts.body);
	if (body !== undefined) headers["content-type"] ??= "application/json";
	const res = await fetch(base + path, { method, headers, body });
	const text = await res.text();
	let parsed: unknown = undefined;
	try {
		parsed = text ? JSON.parse(text) : undefined;
	} catch {
		parsed = undefined;
	}
	return { status: res.status, headers: res.headers, body: parsed as T, text };
}

/** An admin token: logs in the admin the users service seeded with the given password. */
export async function login(base: string, email: string, password: string): Promise<string> {
	const res = await http(base, "POST", "/api/users/login", { body: { email, password } });
	if (res.status !== 200) throw new Error(`login of ${email} failed: ${res.status} ${res.text}`);
	return res.body.token;
}
