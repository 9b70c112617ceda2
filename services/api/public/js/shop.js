// The storefront: catalog, product, cart, sign-in, orders and live notifications.
// Routes live in the hash (#/products/3), so the gateway serves one page.
import { html, render, useState, useEffect, useCallback, useRef } from "/vendor/preact-htm.js";
import { api, auth, ApiError, money, when, streamNotifications, newKey } from "./api.js";
import { useAuth } from "./hooks.js";

const CART_KEY = "carsi.cart";
const PAGE_SIZE = 12;

// ---------------------------------------------------------------- small state helpers

function useHash() {
	const [hash, setHash] = useState(location.hash || "#/");
	useEffect(() => {
		const on = () => setHash(location.hash || "#/");
		window.addEventListener("hashchange", on);
		return () => window.removeEventListener("hashchange", on);
	}, []);
	return hash;
}

/**
 * The cart, in localStorage. `key` is the Idempotency-Key of the next submission: made when the
 * cart is first submitted, kept until that order is placed, dropped when the cart changes. A
 * double click, or a retry after a lost answer, sends the same key: one order.
 */
function loadCart() {
	try {
		return JSON.parse(localStorage.getItem(CART_KEY)) ?? { lines: [], key: null };
	} catch {
		return { lines: [], key: null };
	}
}
function useCart() {
	const [cart, setCart] = useState(loadCart);
	const save = useCallback(next => {
		localStorage.setItem(CART_KEY, JSON.stringify(next));
		setCart(next);
	}, []);
	return {
		cart,
		add(product, quantity) {
			const current = loadCart();
			const lines = current.lines.some(l => l.productId === product.id)
				? current.lines.map(l => (l.productId === product.id ? { ...l, quantity: l.quantity + quantity } : l))
				: [...current.lines, { productId: product.id, name: product.name, priceCents: product.priceCents, currency: product.currency, quantity }];
			save({ lines, key: null });
		},
		setQuantity(productId, quantity) {
			save({ lines: loadCart().lines.map(l => (l.productId === productId ? { ...l, quantity } : l)), key: null });
		},
		remove(productId) {
			save({ lines: loadCart().lines.filter(l => l.productId !== productId), key: null });
		},
		/** The catalog's current name and price of each line (the key stays: the order's body is unchanged). */
		refresh(current) {
			const saved = loadCart();
			let changed = false;
			const lines = saved.lines.map(l => {
				const p = current[l.productId];
				if (!p || (p.name === l.name && p.priceCents === l.priceCents && p.currency === l.currency)) return l;
				changed = true;
				return { ...l, name: p.name, priceCents: p.priceCents, currency: p.currency };
			});
			// Saving re-renders the cart: only when something changed, so what someone is typing stays.
			if (changed) save({ ...saved, lines });
		},
		keyForSubmission() {
			const saved = loadCart();
			if (saved.key) return saved.key;
			const key = newKey();
			save({ ...saved, key });
			return key;
		},
		clear() {
			save({ lines: [], key: null });
		},
	};
}

function go(hash) {
	location.hash = hash;
}

function params(hash) {
	const q = hash.indexOf("?");
	return new URLSearchParams(q >= 0 ? hash.slice(q + 1) : "");
}

// ---------------------------------------------------------------- shared pieces

function Field({ id, label, type = "text", value, onInput, error, ...rest }) {
	return html`<div class="field">
		<label for=${id}>${label}</label>
		<input
			id=${id}
			name=${id}
			type=${type}
			value=${value}
			onInput=${e => onInput(e.currentTarget.value)}
			aria-invalid=${error ? "true" : "false"}
			aria-describedby=${error ? `${id}-error` : undefined}
			...${rest}
		/>
		${error && html`<p class="field-error" id=${`${id}-error`}>${error}</p>`}
	</div>`;
}

function Alert({ error }) {
	if (!error) return null;
	return html`<p class="alert" role="alert">${error}</p>`;
}

function Pager({ page, totalPages, onPage }) {
	if (totalPages <= 1) return null;
	return html`<nav class="pager" aria-label="Pages">
		<button type="button" disabled=${page <= 1} onClick=${() => onPage(page - 1)}>Previous</button>
		<span aria-live="polite">Page ${page} of ${totalPages}</span>
		<button type="button" disabled=${page >= totalPages} onClick=${() => onPage(page + 1)}>Next</button>
	</nav>`;
}

function message(err) {
	if (err instanceof ApiError) return err.message;
	return "The shop cannot be reached. Check your connection and try again.";
}

// ---------------------------------------------------------------- pages

function Catalog({ hash, cart }) {
	const p = params(hash);
	const q = p.get("q") ?? "";
	const page = Number(p.get("page") ?? 1) || 1;
	const sort = p.get("sort") ?? "-createdAt";
	const [query, setQuery] = useState(q);
	const [data, setData] = useState(null);
	const [error, setError] = useState(null);
	const [added, setAdded] = useState(null);

	useEffect(() => {
		setQuery(q);
		const search = new URLSearchParams({ page: String(page), pageSize: String(PAGE_SIZE), sort });
		if (q) search.set("q", q);
		api("GET", `/api/products?${search}`)
			.then(r => {
				setData(r.body);
				setError(null);
			})
			.catch(err => setError(message(err)));
	}, [q, page, sort]);

	const to = next => {
		const s = new URLSearchParams({ q, page: String(page), sort, ...next });
		if (!s.get("q")) s.delete("q");
		go(`#/?${s}`);
	};

	return html`<section aria-labelledby="catalog-title">
		<h1 id="catalog-title">Catalog</h1>
		<form class="search" role="search" onSubmit=${e => (e.preventDefault(), to({ q: query.trim(), page: "1" }))}>
			<div class="field grow">
				<label for="q">Search products</label>
				<input id="q" type="search" value=${query} onInput=${e => setQuery(e.currentTarget.value)} maxlength="200" />
			</div>
			<div class="field">
				<label for="sort">Sort by</label>
				<select id="sort" value=${sort} onChange=${e => to({ sort: e.currentTarget.value, page: "1" })}>
					<option value="-createdAt">Newest</option>
					<option value="priceCents">Price, low to high</option>
					<option value="-priceCents">Price, high to low</option>
					<option value="name">Name</option>
				</select>
			</div>
			<button type="submit">Search</button>
		</form>
		<${Alert} error=${error} />
		<p class="status" role="status">${added ? `${added} added to the cart.` : ""}</p>
		${data &&
		html`<p class="muted">${data.total} product${data.total === 1 ? "" : "s"}${q ? ` matching “${q}”` : ""}</p>
			<ul class="grid">
				${data.rows.map(
					product => html`<li class="card" key=${product.id}>
						<h2><a href=${`#/products/${product.id}`}>${product.name}</a></h2>
						<p class="muted">${product.category}</p>
						<p class="price">${money(product.priceCents, product.currency)}</p>
						<p class=${product.stock > 0 ? "stock" : "stock out"}>${product.stock > 0 ? `${product.stock} in stock` : "Out of stock"}</p>
						<button
							type="button"
							disabled=${product.stock <= 0}
							aria-label=${`Add ${product.name} to the cart`}
							onClick=${() => (cart.add(product, 1), setAdded(product.name))}
						>
							Add to cart
						</button>
					</li>`,
				)}
			</ul>
			<${Pager} page=${data.page} totalPages=${data.totalPages} onPage=${n => to({ page: String(n) })} />`}
	</section>`;
}

function ProductPage({ id, cart }) {
	const [product, setProduct] = useState(null);
	const [cache, setCache] = useState(null);
	const [error, setError] = useState(null);
	const [quantity, setQuantity] = useState("1");
	const [added, setAdded] = useState(false);

	const load = useCallback(() => {
		api("GET", `/api/products/${id}`)
			.then(r => {
				setProduct(r.body);
				setCache(r.headers.get("X-Cache"));
				setError(null);
			})
			.catch(err => setError(err.status === 404 || err.status === 422 ? "There is no such product." : message(err)));
	}, [id]);
	useEffect(load, [load]);

	if (error) return html`<section><h1>Product</h1><${Alert} error=${error} /><p><a href="#/">Back to the catalog</a></p></section>`;
	if (!product) return html`<p role="status">Loading…</p>`;
	const qty = Number(quantity);
	const qtyError = !Number.isInteger(qty) || qty < 1 ? "Enter a whole number of at least 1." : qty > product.stock ? `Only ${product.stock} in stock.` : null;

	return html`<article class="product" aria-labelledby="product-title">
		<p><a href="#/">← Catalog</a></p>
		<h1 id="product-title">${product.name}</h1>
		<p class="cache">
			<span class=${`badge ${cache === "HIT" ? "hit" : "miss"}`} data-testid="x-cache">X-Cache: ${cache ?? "?"}</span>
			${" "}${cache === "HIT" ? "Served from the cache." : "Read from the products database, now cached."}
			${" "}<button type="button" class="link" onClick=${load}>Read again</button>
		</p>
		<dl class="facts">
			<dt>Price</dt><dd class="price" data-testid="price">${money(product.priceCents, product.currency)}</dd>
			<dt>Stock</dt><dd>${product.stock}</dd>
			<dt>Category</dt><dd>${product.category}</dd>
			<dt>SKU</dt><dd>${product.sku}</dd>
		</dl>
		${product.description && html`<p>${product.description}</p>`}
		<form class="inline" onSubmit=${e => {
			e.preventDefault();
			if (qtyError) return;
			cart.add(product, qty);
			setAdded(true);
		}}>
			<${Field} id="quantity" label="Quantity" type="number" min="1" max=${product.stock} value=${quantity} onInput=${setQuantity} error=${quantity && qtyError} />
			<button type="submit" disabled=${product.stock <= 0}>Add to cart</button>
		</form>
		<p role="status">${added ? html`Added. <a href="#/cart">Go to the cart</a>` : ""}</p>
	</article>`;
}

function CartPage({ cart, user }) {
	const [busy, setBusy] = useState(false);
	const [error, setError] = useState(null);
	const [lineErrors, setLineErrors] = useState({});
	const lines = cart.cart.lines;
	const total = lines.reduce((n, l) => n + l.priceCents * l.quantity, 0);

	// Prices may have changed since a line was added: show the catalog's, and flag what is gone.
	const ids = lines.map(l => l.productId).join(",");
	useEffect(() => {
		let stale = false;
		Promise.all(
			lines.map(l =>
				api("GET", `/api/products/${l.productId}`)
					.then(r => [l.productId, r.body])
					.catch(err => (err instanceof ApiError && err.status === 404 ? [l.productId, null] : [l.productId, undefined])),
			),
		).then(found => {
			if (stale) return;
			cart.refresh(Object.fromEntries(found.filter(([, p]) => p)));
			const gone = found.filter(([, p]) => p === null).map(([id]) => [id, "This product is no longer sold."]);
			if (gone.length) setLineErrors(Object.fromEntries(gone));
		});
		return () => (stale = true);
	}, [ids]);
	const currency = lines[0]?.currency ?? "TRY";

	async function place() {
		setError(null);
		setLineErrors({});
		setBusy(true);
		const key = cart.keyForSubmission();
		try {
			const res = await api("POST", "/api/orders", {
				body: { items: lines.map(l => ({ productId: l.productId, quantity: l.quantity })) },
				headers: { "Idempotency-Key": key },
			});
			cart.clear();
			go(`#/orders?placed=${res.body.id}`);
		} catch (err) {
			if (err instanceof ApiError && err.type === "OUT_OF_STOCK") {
				setLineErrors({ [err.data?.productId]: "Out of stock: not enough left for this quantity." });
				setError("One line cannot be ordered: see below.");
			} else if (err instanceof ApiError && err.status === 404 && /Product (\d+)/.test(err.message)) {
				setLineErrors({ [Number(/Product (\d+)/.exec(err.message)[1])]: "This product is no longer sold." });
				setError("One line cannot be ordered: see below.");
			} else if (err instanceof ApiError && err.status === 422) {
				const byLine = {};
				for (const [field, text] of Object.entries(err.fields)) {
					const m = /^items\[(\d+)\]/.exec(field);
					if (m && lines[Number(m[1])]) byLine[lines[Number(m[1])].productId] = text;
				}
				setLineErrors(byLine);
				setError(Object.keys(byLine).length ? "Some lines need a change: see below." : err.message);
			} else setError(message(err));
		} finally {
			setBusy(false);
		}
	}

	return html`<section aria-labelledby="cart-title">
		<h1 id="cart-title">Cart</h1>
		${lines.length === 0
			? html`<p>Your cart is empty. <a href="#/">Browse the catalog</a>.</p>`
			: html`<table class="lines">
						<caption class="visually-hidden">Products in the cart</caption>
						<thead><tr><th scope="col">Product</th><th scope="col">Unit price</th><th scope="col">Quantity</th><th scope="col">Subtotal</th><th scope="col"><span class="visually-hidden">Remove</span></th></tr></thead>
						<tbody>
							${lines.map(
								l => html`<tr key=${l.productId} class=${lineErrors[l.productId] ? "line-error" : ""} data-product=${l.productId}>
									<th scope="row"><a href=${`#/products/${l.productId}`}>${l.name}</a>
										${lineErrors[l.productId] && html`<p class="field-error" id=${`line-${l.productId}-error`}>${lineErrors[l.productId]}</p>`}
									</th>
									<td data-label="Unit price">${money(l.priceCents, l.currency)}</td>
									<td data-label="Quantity">
										<label class="visually-hidden" for=${`qty-${l.productId}`}>Quantity of ${l.name}</label>
										<input
											id=${`qty-${l.productId}`}
											class="qty"
											type="number"
											min="1"
											max="10000"
											value=${l.quantity}
											aria-invalid=${lineErrors[l.productId] ? "true" : "false"}
											aria-describedby=${lineErrors[l.productId] ? `line-${l.productId}-error` : undefined}
											onInput=${e => {
												// Every keystroke, so the cart and the field never disagree when something re-renders.
												const n = Number(e.currentTarget.value);
												if (Number.isInteger(n) && n >= 1 && n !== l.quantity) cart.setQuantity(l.productId, n);
											}}
										/>
									</td>
									<td data-label="Subtotal">${money(l.priceCents * l.quantity, l.currency)}</td>
									<td><button type="button" class="link" onClick=${() => cart.remove(l.productId)} aria-label=${`Remove ${l.name}`}>Remove</button></td>
								</tr>`,
							)}
						</tbody>
						<tfoot><tr><th scope="row" colspan="3">Total (prices are confirmed by the shop)</th><td data-label="Total">${money(total, currency)}</td><td></td></tr></tfoot>
					</table>
					<${Alert} error=${error} />
					${user
						? html`<button type="button" class="primary" disabled=${busy} aria-busy=${busy ? "true" : "false"} onClick=${place}>
								${busy ? "Placing order…" : "Place order"}
							</button>`
						: html`<p><a href="#/login?next=cart">Log in</a> or <a href="#/register?next=cart">create an account</a> to place the order.</p>`}`}
	</section>`;
}

function AuthForm({ mode, hash }) {
	const register = mode === "register";
	const next = params(hash).get("next");
	const [values, setValues] = useState({ name: "", email: "", password: "" });
	const [fields, setFields] = useState({});
	const [error, setError] = useState(null);
	const [busy, setBusy] = useState(false);
	const set = key => value => setValues(v => ({ ...v, [key]: value }));

	async function submit(e) {
		e.preventDefault();
		setBusy(true);
		setError(null);
		setFields({});
		try {
			const body = register ? values : { email: values.email, password: values.password };
			const res = await api("POST", register ? "/api/users/register" : "/api/users/login", { body });
			auth.set(res.body);
			go(next === "cart" ? "#/cart" : "#/");
		} catch (err) {
			if (err instanceof ApiError && (err.status === 422 || err.status === 409)) {
				setFields(err.fields);
				if (err.status === 409) setError(err.message);
			} else if (err instanceof ApiError && err.status === 429) setError("Too many attempts. Wait a minute and try again.");
			else setError(message(err));
		} finally {
			setBusy(false);
		}
	}

	return html`<section class="narrow" aria-labelledby="auth-title">
		<h1 id="auth-title">${register ? "Create an account" : "Log in"}</h1>
		<form onSubmit=${submit} novalidate>
			${register && html`<${Field} id="name" label="Name" value=${values.name} onInput=${set("name")} error=${fields.name} autocomplete="name" required />`}
			<${Field} id="email" label="Email" type="email" value=${values.email} onInput=${set("email")} error=${fields.email} autocomplete="email" required />
			<${Field}
				id="password"
				label=${register ? "Password (at least 8 characters)" : "Password"}
				type="password"
				value=${values.password}
				onInput=${set("password")}
				error=${fields.password}
				autocomplete=${register ? "new-password" : "current-password"}
				required
			/>
			<${Alert} error=${error} />
			<button type="submit" class="primary" disabled=${busy}>${register ? "Create account" : "Log in"}</button>
		</form>
		<p>${register ? html`Have an account? <a href="#/login">Log in</a>` : html`New here? <a href="#/register">Create an account</a>`}</p>
	</section>`;
}

function OrdersPage({ hash, user }) {
	const placed = params(hash).get("placed");
	const [page, setPage] = useState(1);
	const [data, setData] = useState(null);
	const [error, setError] = useState(null);
	const [cancelError, setCancelError] = useState({});

	const load = useCallback(() => {
		api("GET", `/api/orders?page=${page}&pageSize=10`)
			.then(r => setData(r.body))
			.catch(err => setError(message(err)));
	}, [page]);
	useEffect(load, [load]);

	async function cancel(order) {
		try {
			await api("POST", `/api/orders/${order.id}/cancel`);
			load();
		} catch (err) {
			setCancelError(e => ({ ...e, [order.id]: message(err) }));
		}
	}

	if (!user) return html`<p><a href="#/login">Log in</a> to see your orders.</p>`;
	return html`<section aria-labelledby="orders-title">
		<h1 id="orders-title">My orders</h1>
		${placed && html`<p class="notice" role="status">Order placed. Its notification arrives within seconds (see <a href="#/notifications">Notifications</a>).</p>`}
		<${Alert} error=${error} />
		${data && data.rows.length === 0 && html`<p>No orders yet.</p>`}
		<ul class="orders">
			${data?.rows.map(
				order => html`<li key=${order.id} class="order" data-order=${order.id}>
					<h2>Order <code>${order.id.slice(0, 8)}</code> <span class=${`badge ${order.status}`}>${order.status}</span></h2>
					<p class="muted">${when(order.createdAt)}</p>
					<ul>
						${order.items.map(i => html`<li key=${i.productId}>${i.quantity} × ${i.name} (${money(i.unitPriceCents, order.currency)})</li>`)}
					</ul>
					<p class="price">Total ${money(order.totalCents, order.currency)}</p>
					${order.status === "placed" && html`<button type="button" onClick=${() => cancel(order)} aria-label=${`Cancel order ${order.id.slice(0, 8)}`}>Cancel order</button>`}
					${cancelError[order.id] && html`<p class="field-error" role="alert">${cancelError[order.id]}</p>`}
				</li>`,
			)}
		</ul>
		${data && html`<${Pager} page=${data.page} totalPages=${data.totalPages} onPage=${setPage} />`}
	</section>`;
}

function NotificationsPage({ user, live }) {
	if (!user) return html`<p><a href="#/login">Log in</a> to see your notifications.</p>`;
	return html`<section aria-labelledby="notifications-title">
		<h1 id="notifications-title">Notifications</h1>
		<p class="muted">New ones appear here as they are sent (${live.state === "open" ? "live" : "connecting…"}).</p>
		${live.items.length === 0 && html`<p>No notifications yet.</p>`}
		<ul class="notifications" aria-live="polite">
			${live.items.map(
				n => html`<li key=${n.id} class="notification" data-type=${n.type}>
					<h2>${n.subject}</h2>
					<p>${n.body}</p>
					<p class="muted">${when(n.createdAt)} · ${n.type} · ${n.channel} · ${n.status}</p>
				</li>`,
			)}
		</ul>
	</section>`;
}

// ---------------------------------------------------------------- the app

/** The caller's notifications: the list once, then the stream; read again whenever the stream (re)opens. */
function useNotifications(user) {
	const [items, setItems] = useState([]);
	const [state, setState] = useState("closed");
	const [toast, setToast] = useState(null);
	const seen = useRef(new Set());
	// A toast goes away by itself after a while; the list keeps every notification.
	useEffect(() => {
		if (!toast) return undefined;
		const timer = setTimeout(() => setToast(null), 10_000);
		return () => clearTimeout(timer);
	}, [toast]);
	useEffect(() => {
		setItems([]);
		seen.current = new Set();
		if (!user) return undefined;
		const refresh = () =>
			api("GET", "/api/notifications?pageSize=50")
				.then(r => {
					r.body.rows.forEach(n => seen.current.add(n.id));
					setItems(r.body.rows);
				})
				.catch(() => undefined);
		const close = streamNotifications({
			onOpen: refresh,
			onState: setState,
			onNotification(n) {
				if (seen.current.has(n.id)) return;
				seen.current.add(n.id);
				setItems(list => [n, ...list]);
				setToast(n);
			},
		});
		return close;
	}, [user?.id]);
	return { items, state, toast, dismiss: () => setToast(null) };
}

function App() {
	const hash = useHash();
	const session = useAuth();
	const user = session?.user ?? null;
	const cart = useCart();
	const live = useNotifications(user);
	const count = cart.cart.lines.reduce((n, l) => n + l.quantity, 0);
	const path = hash.replace(/^#/, "").split("?")[0] || "/";

	useEffect(() => {
		const main = document.getElementById("main");
		if (main && document.activeElement === document.body) main.focus({ preventScroll: true });
	}, [path]);

	let page;
	const productMatch = /^\/products\/(\d+)$/.exec(path);
	if (productMatch) page = html`<${ProductPage} id=${productMatch[1]} cart=${cart} />`;
	else if (path === "/cart") page = html`<${CartPage} cart=${cart} user=${user} />`;
	else if (path === "/login") page = html`<${AuthForm} mode="login" hash=${hash} />`;
	else if (path === "/register") page = html`<${AuthForm} mode="register" hash=${hash} />`;
	else if (path === "/orders") page = html`<${OrdersPage} hash=${hash} user=${user} />`;
	else if (path === "/notifications") page = html`<${NotificationsPage} user=${user} live=${live} />`;
	else page = html`<${Catalog} hash=${hash} cart=${cart} />`;

	return html`<a class="skip" href="#main" onClick=${e => (e.preventDefault(), document.getElementById("main").focus())}>Skip to content</a>
		<header class="top">
			<a class="brand" href="#/">Çarşı</a>
			<nav aria-label="Shop">
				<ul>
					<li><a href="#/" aria-current=${path === "/" ? "page" : undefined}>Catalog</a></li>
					<li><a href="#/cart" aria-current=${path === "/cart" ? "page" : undefined}>Cart${count ? ` (${count})` : ""}</a></li>
					${user &&
					html`<li><a href="#/orders" aria-current=${path === "/orders" ? "page" : undefined}>Orders</a></li>
						<li><a href="#/notifications" aria-current=${path === "/notifications" ? "page" : undefined}>Notifications${live.items.length ? ` (${live.items.length})` : ""}</a></li>`}
					${user?.role === "admin" && html`<li><a href="/console">Console</a></li>`}
					${user
						? html`<li><span class="muted">${user.name}</span> <button type="button" class="link" onClick=${() => (auth.set(null), go("#/"))}>Log out</button></li>`
						: html`<li><a href="#/login">Log in</a></li><li><a href="#/register">Register</a></li>`}
				</ul>
			</nav>
		</header>
		<main id="main" tabindex="-1">${page}</main>
		<div class="toast-region" role="status" aria-live="polite">
			${live.toast &&
			html`<div class="toast" data-testid="toast">
				<strong>${live.toast.subject}</strong>
				<a href="#/notifications">See your notifications</a>
				<button type="button" class="link" onClick=${live.dismiss} aria-label="Dismiss the notification">Dismiss</button>
			</div>`}
		</div>`;
}

render(html`<${App} />`, document.getElementById("app"));
