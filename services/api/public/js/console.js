// The operator console: the cluster's nodes and services, the carsi.* metrics, the path of an
// order through the services (tracing spans), the dead letters with replay, and catalog editing
// with the cache's answer shown. Admin only: the data endpoints answer 403 to anyone else.
import { html, render, useState, useEffect, useCallback, useRef } from "/vendor/preact-htm.js";
import { api, auth, ApiError, money, when } from "./api.js";
import { useAuth } from "./hooks.js";

const POLL_MS = 3000;

/** Calls `load` now and every `ms` while the page is visible. */
function usePoll(load, ms, deps) {
	useEffect(() => {
		let stopped = false;
		const tick = () => !stopped && document.visibilityState === "visible" && load();
		tick();
		const timer = setInterval(tick, ms);
		return () => ((stopped = true), clearInterval(timer));
	}, deps);
}

function errorText(err) {
	if (err instanceof ApiError) return `${err.status} ${err.type}: ${err.message}`;
	return "The gateway cannot be reached.";
}

// ---------------------------------------------------------------- sign-in and access

function Login() {
	const [email, setEmail] = useState("");
	const [password, setPassword] = useState("");
	const [error, setError] = useState(null);
	async function submit(e) {
		e.preventDefault();
		try {
			const res = await api("POST", "/api/users/login", { body: { email, password } });
			auth.set(res.body);
		} catch (err) {
			setError(err instanceof ApiError && err.status === 401 ? "Wrong email or password." : errorText(err));
		}
	}
	return html`<section class="narrow" aria-labelledby="login-title">
		<h1 id="login-title">Console: log in as an admin</h1>
		<form onSubmit=${submit}>
			<div class="field"><label for="email">Email</label><input id="email" type="email" autocomplete="username" value=${email} onInput=${e => setEmail(e.currentTarget.value)} required /></div>
			<div class="field"><label for="password">Password</label><input id="password" type="password" autocomplete="current-password" value=${password} onInput=${e => setPassword(e.currentTarget.value)} required /></div>
			${error && html`<p class="alert" role="alert">${error}</p>`}
			<button type="submit" class="primary">Log in</button>
		</form>
	</section>`;
}

function Forbidden({ user }) {
	return html`<section aria-labelledby="forbidden-title">
		<h1 id="forbidden-title">Forbidden</h1>
		<p role="alert">The console is for admins. You are logged in as ${user.email}, a ${user.role}.</p>
		<p><a href="/">Back to the shop</a> · <button type="button" class="link" onClick=${() => auth.set(null)}>Log in as someone else</button></p>
	</section>`;
}

// ---------------------------------------------------------------- cluster and metrics

function Cluster() {
	const [nodes, setNodes] = useState(null);
	const [error, setError] = useState(null);
	usePoll(
		() =>
			api("GET", "/api/admin/cluster")
				.then(r => (setNodes(r.body.nodes), setError(null)))
				.catch(err => setError(errorText(err))),
		POLL_MS,
		[],
	);
	return html`<section aria-labelledby="cluster-title">
		<h2 id="cluster-title">Nodes and services</h2>
		${error && html`<p class="alert" role="alert">${error}</p>`}
		${nodes &&
		html`<div class="scroll"><table>
			<thead><tr><th scope="col">Node ID</th><th scope="col">State</th><th scope="col">Host</th><th scope="col">CPU</th><th scope="col">Services</th></tr></thead>
			<tbody>
				${nodes.map(
					n => html`<tr key=${n.id} data-node=${n.id}>
						<th scope="row"><code>${n.id}</code>${n.local ? " (this gateway)" : ""}</th>
						<td><span class=${`badge ${n.available ? "up" : "down"}`}>${n.available ? "online" : "offline"}</span></td>
						<td>${n.hostname ?? ""}</td>
						<td>${n.cpu === null ? "–" : `${n.cpu}%`}</td>
						<td><ul class="services">${n.services.map(s => html`<li key=${s}>${s}</li>`)}</ul></td>
					</tr>`,
				)}
			</tbody>
		</table></div>`}
	</section>`;
}

const fmt = {
	ratio: v => (v === null ? "–" : `${(v * 100).toFixed(1)}%`),
	count: v => (v === null ? "–" : String(Math.round(v))),
	seconds: v => (v === null ? "–" : v < 1 ? `${Math.round(v * 1000)} ms` : `${v.toFixed(1)} s`),
	rate: v => (v === null ? "–" : v.toFixed(1)),
};

function Metrics() {
	const [data, setData] = useState(null);
	const [error, setError] = useState(null);
	// Orders per minute: the growth of carsi.orders.placed over the samples of the last minute.
	const samples = useRef([]);
	usePoll(
		() =>
			api("GET", "/api/admin/metrics")
				.then(r => {
					const now = Date.now();
					if (r.body.totals.ordersPlaced !== null) samples.current = [...samples.current.filter(s => now - s.t <= 60_000), { t: now, v: r.body.totals.ordersPlaced }];
					setData(r.body);
					setError(null);
				})
				.catch(err => setError(errorText(err))),
		POLL_MS,
		[],
	);
	const t = data?.totals;
	const s = samples.current;
	const perMinute = s.length >= 2 && s[s.length - 1].t > s[0].t ? ((s[s.length - 1].v - s[0].v) * 60_000) / (s[s.length - 1].t - s[0].t) : null;
	const missing = t && Object.values(t).every(v => v === null);
	const tiles = t
		? [
				["Cache hit ratio", fmt.ratio(t.cacheHitRatio), `${fmt.count(t.cacheHits)} hits, ${fmt.count(t.cacheMisses)} misses`],
				["Orders per minute", fmt.rate(perMinute), "over the last minute on this page"],
				["Orders placed", fmt.count(t.ordersPlaced), `${fmt.count(t.ordersRefused)} refused`],
				["Outbox backlog", fmt.count(t.outboxBacklog), `oldest ${fmt.seconds(t.outboxOldestAgeSeconds)}`],
				["Dead letters", fmt.count(t.dlqDepth), "carsi.dlq.depth"],
				["Notification lag", fmt.seconds(t.notificationLagMeanSeconds), "mean, event to stored"],
			]
		: [];
	return html`<section aria-labelledby="metrics-title">
		<h2 id="metrics-title">Metrics</h2>
		${error && html`<p class="alert" role="alert">${error}</p>`}
		${missing && html`<p class="muted">No node reports the carsi.* metrics yet: the tiles fill in once they do.</p>`}
		<ul class="tiles">
			${tiles.map(([label, value, note]) => html`<li class="tile" key=${label}><span class="label">${label}</span><span class="value">${value}</span><span class="muted">${note}</span></li>`)}
		</ul>
		${data && html`<p class="muted">From ${data.nodes.length} node${data.nodes.length === 1 ? "" : "s"} at ${when(data.collectedAt)}.</p>`}
	</section>`;
}

// ---------------------------------------------------------------- the order's path (tracing)

const SERVICE_CLASS = ["api", "orders", "products", "notifications"];

/**
 * Spans in call order: each after its parent, siblings by start time, with their depth. Start
 * times alone put a consumer before the publish that caused it when both begin in the same
 * millisecond.
 */
function inCallOrder(spans) {
	const ids = new Set(spans.map(s => s.id));
	const children = new Map();
	for (const s of spans) {
		const parent = s.parentId && ids.has(s.parentId) ? s.parentId : null;
		if (!children.has(parent)) children.set(parent, []);
		children.get(parent).push(s);
	}
	const out = [];
	const visit = (parent, depth) => {
		for (const s of (children.get(parent) ?? []).sort((a, b) => a.startTime - b.startTime)) {
			out.push({ span: s, depth });
			visit(s.id, depth + 1);
		}
	};
	visit(null, 0);
	return out;
}

function Timeline() {
	const [traces, setTraces] = useState(null);
	const [unavailable, setUnavailable] = useState(null);
	const [selected, setSelected] = useState(() => new URLSearchParams(location.hash.slice(1)).get("trace"));
	const [trace, setTrace] = useState(null);

	usePoll(
		() =>
			api("GET", "/api/admin/traces?limit=20")
				.then(r => {
					setTraces(r.body.items);
					setUnavailable(null);
				})
				.catch(err => setUnavailable(err instanceof ApiError && err.status === 404 ? "Tracing is not available on this gateway (no /api/admin/traces)." : errorText(err))),
		POLL_MS,
		[],
	);
	const orders = (traces ?? []).filter(t => /POST .*\/api\/orders$/.test(t.name) || /orders\.create/.test(t.name));
	const current = selected ?? orders[0]?.traceId ?? null;
	usePoll(
		() => {
			if (!current) return;
			api("GET", `/api/admin/traces/${encodeURIComponent(current)}`)
				.then(r => setTrace(r.body))
				.catch(() => setTrace(null));
		},
		2000,
		[current],
	);

	const spans = trace?.spans ?? [];
	const start = spans.length ? Math.min(...spans.map(s => s.startTime)) : 0;
	const end = spans.length ? Math.max(...spans.map(s => s.finishTime ?? s.startTime + (s.duration ?? 0))) : 0;
	const total = Math.max(end - start, 1);

	return html`<section aria-labelledby="timeline-title">
		<h2 id="timeline-title">An order's path</h2>
		<p class="muted">HTTP → orders → products.reserve → outbox → RabbitMQ → notifications, from the tracing spans of every node. It fills in live while the events travel.</p>
		${unavailable && html`<p class="muted" role="status">${unavailable}</p>`}
		${traces &&
		html`<div class="field">
			<label for="trace">Trace</label>
			<select id="trace" value=${current ?? ""} onChange=${e => setSelected(e.currentTarget.value || null)}>
				${current === null && html`<option value="">No order traced yet: place an order in the shop</option>`}
				${traces.map(t => html`<option key=${t.traceId} value=${t.traceId}>${t.name} · ${new Date(t.startTime).toLocaleTimeString()} · ${t.spans} spans</option>`)}
			</select>
		</div>`}
		${spans.length > 0 &&
		html`<ol class="timeline" aria-label="Spans by start time">
			${inCallOrder(spans).map(({ span: s, depth }) => {
				const offset = s.startTime - start;
				const service = SERVICE_CLASS.find(c => (s.service ?? "").startsWith(c)) ?? "";
				return html`<li key=${s.id}>
					<span class="what" style=${{ paddingLeft: `${Math.min(depth, 6) * 0.75}rem` }}><strong>${s.name}</strong><br /><span class="muted">${s.service ?? "?"} on ${s.nodeId ?? "?"} · +${offset.toFixed(1)} ms · ${(s.duration ?? 0).toFixed(1)} ms${s.error ? ` · error: ${s.error.message ?? s.error}` : ""}</span></span>
					<span class="track" aria-hidden="true"><span class=${`bar ${service}${s.error ? " error" : ""}`} style=${{ left: `${(offset / total) * 100}%`, width: `${((s.duration ?? 0) / total) * 100}%` }}></span></span>
				</li>`;
			})}
		</ol>`}
	</section>`;
}

// ---------------------------------------------------------------- dead letters

function DeadLetters() {
	const [items, setItems] = useState(null);
	const [error, setError] = useState(null);
	const [result, setResult] = useState(null);
	const load = useCallback(
		() =>
			api("GET", "/api/admin/dead-letters?limit=50")
				.then(r => (setItems(r.body.items), setError(null)))
				.catch(err => setError(errorText(err))),
		[],
	);
	usePoll(load, POLL_MS, []);
	async function replay(item) {
		try {
			const r = await api("POST", "/api/admin/dead-letters/replay", { body: { messageId: item.messageId, group: item.group } });
			setResult(`Replayed ${r.body.replayed.length}, failed ${r.body.failed.length}${r.body.failed[0] ? `: ${r.body.failed[0].error}` : ""}.`);
			load();
		} catch (err) {
			setResult(errorText(err));
		}
	}
	return html`<section aria-labelledby="dlq-title">
		<h2 id="dlq-title">Dead letters</h2>
		${error && html`<p class="alert" role="alert">${error}</p>`}
		<p role="status">${result ?? ""}</p>
		${items && items.length === 0 && html`<p>No dead letters: every event was handled.</p>`}
		${items &&
		items.length > 0 &&
		html`<div class="scroll"><table>
			<thead><tr><th scope="col">Event</th><th scope="col">Group</th><th scope="col">Attempts</th><th scope="col">Dead since</th><th scope="col">Error</th><th scope="col"><span class="visually-hidden">Replay</span></th></tr></thead>
			<tbody>
				${items.map(
					d => html`<tr key=${`${d.group}:${d.messageId}`}>
						<th scope="row">${d.event}<br /><code class="muted">${d.messageId}</code></th>
						<td>${d.group}</td>
						<td>${d.attempts ?? "–"}</td>
						<td>${when(d.deadAt)}</td>
						<td>${d.error ?? ""}</td>
						<td><button type="button" disabled=${!d.messageId} onClick=${() => replay(d)} aria-label=${`Replay ${d.event} ${d.messageId ?? ""} for ${d.group}`}>Replay</button></td>
					</tr>`,
				)}
			</tbody>
		</table></div>`}
	</section>`;
}

// ---------------------------------------------------------------- catalog editing

/** "129.90" → 12990; null when it is not a price. */
function toCents(text) {
	const m = /^\s*(\d{1,9})(?:[.,](\d{1,2}))?\s*$/.exec(text);
	return m ? Number(m[1]) * 100 + Number((m[2] ?? "0").padEnd(2, "0")) : null;
}

/** Two reads of a product after a change: the first comes from the database (MISS), the second from the cache (HIT). */
async function cacheProbe(id) {
	const reads = [];
	for (let i = 0; i < 2; i++) {
		const r = await api("GET", `/api/products/${id}`);
		reads.push({ cache: r.headers.get("X-Cache"), priceCents: r.body.priceCents, stock: r.body.stock, currency: r.body.currency });
	}
	return reads;
}

function ProductRow({ product, onSaved }) {
	const [price, setPrice] = useState((product.priceCents / 100).toFixed(2));
	const [stock, setStock] = useState(String(product.stock));
	const [errors, setErrors] = useState({});
	const [probe, setProbe] = useState(null);
	const id = product.id;
	async function save(e) {
		e.preventDefault();
		const priceCents = toCents(price);
		const stockN = Number(stock);
		const local = {};
		if (priceCents === null) local.priceCents = "Enter a price such as 129.90.";
		if (!Number.isInteger(stockN) || stockN < 0) local.stock = "Enter a whole number, 0 or more.";
		setErrors(local);
		if (Object.keys(local).length) return;
		try {
			await api("PATCH", `/api/products/${id}`, { body: { priceCents, stock: stockN } });
			setProbe(await cacheProbe(id));
			onSaved();
		} catch (err) {
			setErrors(err instanceof ApiError && err.status === 422 ? err.fields : { form: errorText(err) });
		}
	}
	const describe = field => (errors[field] ? `p${id}-${field}-error` : undefined);
	return html`<tr data-product=${id}>
		<th scope="row"><a href=${`/#/products/${id}`}>${product.name}</a><br /><code class="muted">${product.sku}</code></th>
		<td colspan="3">
			<form class="inline catalog-edit" onSubmit=${save} aria-label=${`Edit ${product.name}`}>
				<div class="field">
					<label for=${`p${id}-price`}>Price<span class="visually-hidden"> of ${product.name}</span> (${product.currency})</label>
					<input id=${`p${id}-price`} inputmode="decimal" value=${price} onInput=${e => setPrice(e.currentTarget.value)} aria-invalid=${errors.priceCents ? "true" : "false"} aria-describedby=${describe("priceCents")} />
					${errors.priceCents && html`<p class="field-error" id=${`p${id}-priceCents-error`}>${errors.priceCents}</p>`}
				</div>
				<div class="field">
					<label for=${`p${id}-stock`}>Stock<span class="visually-hidden"> of ${product.name}</span></label>
					<input id=${`p${id}-stock`} type="number" min="0" value=${stock} onInput=${e => setStock(e.currentTarget.value)} aria-invalid=${errors.stock ? "true" : "false"} aria-describedby=${describe("stock")} />
					${errors.stock && html`<p class="field-error" id=${`p${id}-stock-error`}>${errors.stock}</p>`}
				</div>
				<button type="submit" aria-label=${`Save ${product.name}`}>Save</button>
			</form>
			${errors.form && html`<p class="field-error" role="alert">${errors.form}</p>`}
			${probe &&
			html`<p role="status" class="cache-probe">
				Saved. Read back: ${probe.map((r, i) => html`${i ? " then " : ""}<span class=${`badge ${r.cache === "HIT" ? "hit" : "miss"}`}>${r.cache}</span> ${money(r.priceCents, r.currency)}`)}
				${" "}(the change dropped the cached copy; the next read cached it again).
			</p>`}
		</td>
	</tr>`;
}

function Catalog() {
	const [data, setData] = useState(null);
	const [page, setPage] = useState(1);
	const [error, setError] = useState(null);
	const [form, setForm] = useState({ sku: "", name: "", category: "", price: "", stock: "" });
	const [fields, setFields] = useState({});
	const [created, setCreated] = useState(null);
	const load = useCallback(
		() =>
			api("GET", `/api/products?page=${page}&pageSize=10&sort=-createdAt`)
				.then(r => (setData(r.body), setError(null)))
				.catch(err => setError(errorText(err))),
		[page],
	);
	useEffect(load, [load]);
	const set = key => e => setForm(f => ({ ...f, [key]: e.currentTarget.value }));

	async function create(e) {
		e.preventDefault();
		setCreated(null);
		const priceCents = toCents(form.price);
		const body = { sku: form.sku.trim(), name: form.name.trim(), category: form.category.trim(), priceCents: priceCents ?? -1, stock: Number(form.stock) };
		try {
			const r = await api("POST", "/api/products", { body });
			setFields({});
			setCreated(r.body);
			setForm({ sku: "", name: "", category: "", price: "", stock: "" });
			load();
		} catch (err) {
			if (err instanceof ApiError && (err.status === 422 || err.status === 409)) setFields(err.fields);
			else setFields({ form: errorText(err) });
		}
	}
	const input = (key, label, field = key, extra = {}) => html`<div class="field">
		<label for=${`new-${key}`}>${label}</label>
		<input id=${`new-${key}`} value=${form[key]} onInput=${set(key)} aria-invalid=${fields[field] ? "true" : "false"} aria-describedby=${fields[field] ? `new-${key}-error` : undefined} ...${extra} />
		${fields[field] && html`<p class="field-error" id=${`new-${key}-error`}>${fields[field]}</p>`}
	</div>`;

	return html`<section aria-labelledby="catalog-title">
		<h2 id="catalog-title">Catalog</h2>
		<form class="inline panel" onSubmit=${create} aria-labelledby="new-title">
			<h3 id="new-title" class="visually-hidden">New product</h3>
			${input("sku", "New SKU")} ${input("name", "New name")} ${input("category", "New category")}
			${input("price", "New price (TRY)", "priceCents", { inputmode: "decimal" })} ${input("stock", "New stock", "stock", { type: "number", min: "0" })}
			<button type="submit" class="primary">Create product</button>
		</form>
		${fields.form && html`<p class="alert" role="alert">${fields.form}</p>`}
		${created && html`<p role="status">Created ${created.name} (id ${created.id}).</p>`}
		${error && html`<p class="alert" role="alert">${error}</p>`}
		${data &&
		html`<div class="scroll"><table>
			<thead><tr><th scope="col">Product</th><th scope="col" colspan="3">Price and stock</th></tr></thead>
			<tbody>${data.rows.map(p => html`<${ProductRow} key=${`${p.id}:${p.updatedAt}`} product=${p} onSaved=${() => undefined} />`)}</tbody>
		</table></div>
		<nav class="pager" aria-label="Catalog pages">
			<button type="button" disabled=${page <= 1} onClick=${() => setPage(page - 1)}>Previous</button>
			<span>Page ${data.page} of ${Math.max(data.totalPages, 1)}</span>
			<button type="button" disabled=${page >= data.totalPages} onClick=${() => setPage(page + 1)}>Next</button>
		</nav>`}
	</section>`;
}

// ---------------------------------------------------------------- the page

function App() {
	const session = useAuth();
	const user = session?.user;
	let body;
	if (!user) body = html`<${Login} />`;
	else if (user.role !== "admin") body = html`<${Forbidden} user=${user} />`;
	else
		body = html`<h1>Console</h1>
			<${Cluster} /><${Metrics} /><${Timeline} /><${DeadLetters} /><${Catalog} />`;
	return html`<header class="top">
			<a class="brand" href="/">Çarşı</a>
			<nav aria-label="Console">
				<ul>
					<li><a href="/">Shop</a></li>
					<li><a href="/console" aria-current="page">Console</a></li>
					${user && html`<li><span class="muted">${user.email}</span> <button type="button" class="link" onClick=${() => auth.set(null)}>Log out</button></li>`}
				</ul>
			</nav>
		</header>
		<main id="main" tabindex="-1">${body}</main>`;
}

render(html`<${App} />`, document.getElementById("app"));
