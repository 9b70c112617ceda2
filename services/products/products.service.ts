/**
 * products: owns the catalog and its stock; serves reads cache-aside (mixins/cache.mixin.ts).
 * Never answers a write before every cached copy of what it changed is gone; never exposes the
 * adapter's generic query/search/field parameters.
 */
import type { Context, Service, ServiceSchema } from "moleculer";
import { UniqueConstraintError, type Model } from "sequelize";
import { getConfig } from "../../lib/config";
import { NotFoundError, SkuTakenError, ValidationFailedError } from "../../lib/errors";
import { CacheMixin, type CacheMethods, type CacheMeta, type CacheSettings } from "../../mixins/cache.mixin";
import { DbMixin, plainRow, type DbMethods, type DbSettings } from "../../mixins/db.mixin";
import { lifecycle } from "../../lib/service";
import { MAX_INT, countedPage, orderLinesParam, pageParams } from "../../lib/params";
import { consumer } from "../../lib/channels";
import type { OrderCancelled, OrderCreated } from "../../lib/events";
import { migrations } from "./migrations";
import { PRODUCT_COLUMNS, ProductModel, SEARCH_COLUMN, SEARCH_SEPARATOR, searchSortKey, type Product, type ProductRow } from "./model";
import { Reservations, type Reservation, type RequestedLine } from "./reservations";
import { COLUMN_STATS_SQL, SQLITE_SAMPLE_SQL, SearchStats, indexWord, sqliteStats, type ColumnStats } from "./search";

export type ProductsSettings = DbSettings &
	CacheSettings & {
		/** How long stock stays held without a confirming order. */
		reservationTtlMs: number;
		/** How often this node looks for reservations past their time (0: never). */
		reservationSweepMs: number;
		/** Extra time past expiry before a sweep releases, so a commit racing the expiry wins. */
		reservationGraceMs: number;
	};

export interface ListParams {
	page: number;
	pageSize: number;
	q?: string;
	category?: string;
	sort: SortKey;
}
export interface ListResult<T> {
	rows: T[];
	total: number;
	page: number;
	pageSize: number;
	totalPages: number;
}
type ProductInput = Omit<Product, "id" | "createdAt" | "updatedAt">;

/**
 * A SQLite search the sample expects in at least this share of the rows reads its page by walking
 * the sort column's index: a page of matches is met within about twice the page's rows, or, where
 * the matches bunch, within no more rows than the one statement reads anyway.
 */
const BROAD_SHARE = 0.5;

/** The media type moleculer-web gives an object it writes out as JSON: a JSON text answered as it is gets the same. */
const JSON_TYPE = "application/json; charset=utf-8";

/** The only orders a client may ask for, mapped to columns (no client text reaches ORDER BY). */
const SORTS = {
	createdAt: ["created_at", "ASC"],
	"-createdAt": ["created_at", "DESC"],
	priceCents: ["price_cents", "ASC"],
	"-priceCents": ["price_cents", "DESC"],
	name: ["name", "ASC"],
	"-name": ["name", "DESC"],
} as const;
type SortKey = keyof typeof SORTS;

const fields = {
	sku: { type: "string", trim: true, pattern: /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, messages: { stringPattern: "The 'sku' field must be 1-64 letters, digits, '.', '_' or '-'." } },
	name: { type: "string", trim: true, min: 1, max: 200 },
	description: { type: "string", trim: true, max: 5000 },
	category: { type: "string", trim: true, min: 1, max: 100 },
	priceCents: { type: "number", integer: true, min: 0, max: MAX_INT },
	currency: { type: "string", pattern: /^[A-Z]{3}$/, messages: { stringPattern: "The 'currency' field must be an ISO 4217 code such as TRY." } },
	stock: { type: "number", integer: true, min: 0, max: MAX_INT },
} as const;
const optional = <T extends object>(schema: T) => ({ ...schema, optional: true });
const idParam = { type: "number", integer: true, positive: true, convert: true, max: MAX_INT } as const;

interface ProductsMethods {
	toProduct(row: Model | ProductRow): Product;
	findProduct(id: number): Promise<Product | null>;
	listProducts(params: ListParams): Promise<ListResult<Product>>;
	releaseReservation(orderId: string, dueBefore?: Date): Promise<boolean>;
	confirmReservation(orderId: string): Promise<string | null>;
	sweepReservations(): Promise<number>;
}
type ProductsThis = Service<ProductsSettings> &
	DbMethods &
	CacheMethods &
	ProductsMethods & { reservations: Reservations; searchStats?: SearchStats; sweepTimer?: NodeJS.Timeout; sweeping?: Promise<number> };

const orderIdParam = { type: "uuid" } as const;

const config = getConfig();

const ProductsService: ServiceSchema<ProductsSettings> = {
	name: "products",
	mixins: [DbMixin({ model: ProductModel, migrations }), CacheMixin],

	settings: {
		databaseUrl: config.databaseUrls.products,
		cacheTtlSeconds: config.cacheTtlSeconds,
		reservationTtlMs: config.reservationTtlMs,
		reservationSweepMs: config.reservationSweepMs,
		reservationGraceMs: Math.min(2000, config.reservationTtlMs),
	},

	actions: {
		list: {
			params: {
				...pageParams,
				q: { type: "string", trim: true, max: 200, optional: true },
				category: { type: "string", trim: true, max: 100, optional: true },
				sort: {
					type: "enum",
					values: Object.keys(SORTS),
					default: "-createdAt",
					messages: { enumValue: `The 'sort' field must be one of ${Object.keys(SORTS).join(", ")}.` },
				},
				$$strict: true,
			},
			handler(this: ProductsThis, ctx: Context<ListParams, CacheMeta>) {
				const { page, pageSize, sort } = ctx.params;
				// One key per distinct question, whatever order the client wrote the parameters in.
				const params: ListParams = { page, pageSize, sort, q: ctx.params.q || undefined, category: ctx.params.category || undefined };
				return this.cachedList(ctx, { ...params }, () => this.listProducts(params));
			},
		},

		get: {
			params: { id: idParam, $$strict: true },
			async handler(this: ProductsThis, ctx: Context<{ id: number }, CacheMeta>) {
				const product = await this.cachedEntity(ctx, ctx.params.id, () => this.findProduct(ctx.params.id), ctx.meta.$jsonText === true);
				if (!product) throw new NotFoundError("Product", ctx.params.id);
				// A hit from Redis, for the gateway: the stored JSON, sent on as it is.
				if (typeof product === "string") (ctx.meta as { $responseType?: string }).$responseType = JSON_TYPE;
				return product;
			},
		},

		create: {
			params: {
				sku: fields.sku,
				name: fields.name,
				description: { ...fields.description, default: "" },
				category: fields.category,
				priceCents: fields.priceCents,
				currency: { ...fields.currency, default: "TRY" },
				stock: { ...fields.stock, default: 0 },
				$$strict: true,
			},
			async handler(this: ProductsThis, ctx: Context<ProductInput>) {
				let product: Product;
				try {
					product = this.toProduct(await this.model.create({ ...ctx.params }));
				} catch (err) {
					if (err instanceof UniqueConstraintError) throw new SkuTakenError(ctx.params.sku);
					throw err;
				}
				// A new product may belong in any cached list.
				await this.invalidateEntities([product.id]);
				return product;
			},
		},

		update: {
			params: {
				id: idParam,
				sku: optional(fields.sku),
				name: optional(fields.name),
				description: optional(fields.description),
				category: optional(fields.category),
				priceCents: optional(fields.priceCents),
				currency: optional(fields.currency),
				stock: optional(fields.stock),
				$$strict: true,
			},
			async handler(this: ProductsThis, ctx: Context<Partial<ProductInput> & { id: number }>) {
				const { id, ...changes } = ctx.params;
				// fastest-validator lets an optional field be null; every column here is NOT NULL, so a
				// null would reach the database and fail there (a 500, found by the fuzzer).
				const nulls = Object.entries(changes).filter(([, v]) => v === null).map(([field]) => field);
				if (nulls.length > 0)
					throw new ValidationFailedError(nulls.map(field => ({ field, message: `The '${field}' field must not be null.` })));
				if (Object.keys(changes).length === 0)
					throw new ValidationFailedError([{ field: "body", message: "Give at least one field to change." }]);
				let affected: number;
				try {
					// One statement: the row as the client sent it, never a read-modify-write.
					[affected] = await this.model.update(changes, { where: { id } });
				} catch (err) {
					if (err instanceof UniqueConstraintError) throw new SkuTakenError(changes.sku ?? "");
					throw err;
				}
				if (affected === 0) throw new NotFoundError("Product", id);
				await this.invalidateEntities([id]);
				const product = await this.findProduct(id);
				if (!product) throw new NotFoundError("Product", id);
				return product;
			},
		},

		/**
		 * Holds the stock of every line for an order, or of none (409 OUT_OF_STOCK). Idempotent by
		 * order id: a retry answers the first reservation. Answers the lines with the catalog's
		 * names and prices, which the order uses (never the client's).
		 */
		reserve: {
			visibility: "public",
			params: {
				orderId: orderIdParam,
				items: orderLinesParam,
			},
			async handler(this: ProductsThis, ctx: Context<{ orderId: string; items: RequestedLine[] }>): Promise<Reservation> {
				const { reservation, taken } = await this.reservations.reserve(ctx.params.orderId, ctx.params.items, this.settings.reservationTtlMs);
				if (taken) await this.invalidateEntities(reservation.lines.map(l => l.productId));
				return reservation;
			},
		},

		/** The order was committed: its stock stays held until the order is cancelled. */
		confirm: {
			visibility: "public",
			params: { orderId: orderIdParam },
			async handler(this: ProductsThis, ctx: Context<{ orderId: string }>) {
				return { status: await this.confirmReservation(ctx.params.orderId) };
			},
		},

		/** Gives an order's stock back, exactly once however often it is called. */
		release: {
			visibility: "public",
			params: { orderId: orderIdParam },
			async handler(this: ProductsThis, ctx: Context<{ orderId: string }>) {
				return { released: await this.releaseReservation(ctx.params.orderId) };
			},
		},

		remove: {
			params: { id: idParam, $$strict: true },
			async handler(this: ProductsThis, ctx: Context<{ id: number }>) {
				const deleted = await this.model.destroy({ where: { id: ctx.params.id } });
				if (deleted === 0) throw new NotFoundError("Product", ctx.params.id);
				await this.invalidateEntities([ctx.params.id]);
				return null;
			},
		},
	},

	/**
	 * The durable path behind the orders service's synchronous calls: a placed order confirms its
	 * reservation, a cancelled one releases it. Both are idempotent by order id, so a redelivery or
	 * a race with the call changes nothing twice.
	 */
	channels: {
		"order.created": consumer("products", async function (this: Service, ctx: Context<unknown, Record<string, unknown>>) {
			// Usually orders.create has confirmed it already: one guarded update, nothing read back.
			await (this as unknown as ProductsThis).reservations.confirm((ctx.params as OrderCreated).order.id);
		}),
		"order.cancelled": consumer("products", async function (this: Service, ctx: Context<unknown, Record<string, unknown>>) {
			await (this as unknown as ProductsThis).releaseReservation((ctx.params as OrderCancelled).order.id);
		}),
	},

	methods: {
		async releaseReservation(this: ProductsThis, orderId: string, dueBefore?: Date): Promise<boolean> {
			const changed = await this.reservations.release(orderId, dueBefore);
			if (changed.length > 0) await this.invalidateEntities(changed);
			return changed.length > 0;
		},

		/** Answers the status after the call: confirmed, or what it already was (null: no reservation). */
		async confirmReservation(this: ProductsThis, orderId: string): Promise<string | null> {
			if (await this.reservations.confirm(orderId)) return "confirmed";
			return (await this.reservations.find(orderId))?.status ?? null;
		},

		/**
		 * Reservations held past their time: the orders service may have died between reserve and
		 * commit. Its own database says whether the order exists: placed → confirm, cancelled or
		 * absent → release. When orders cannot answer, nothing is decided.
		 */
		async sweepReservations(this: ProductsThis): Promise<number> {
			const cutoff = new Date(Date.now() - this.settings.reservationGraceMs);
			const due = await this.reservations.expired(cutoff, 100);
			let released = 0;
			for (const orderId of due) {
				let state: string;
				try {
					({ state } = await this.broker.call<{ state: string }, { id: string }>("orders.placement", { id: orderId }));
				} catch (err) {
					this.logger.debug(`Reservation ${orderId} kept: orders cannot say (${(err as Error).message})`);
					continue;
				}
				if (state === "placed") await this.confirmReservation(orderId);
				// Only if still due: a retry of the order may have held it again meanwhile (reserve).
				else if (await this.releaseReservation(orderId, cutoff)) released++;
			}
			if (released > 0) this.logger.info(`Released ${released} reservation(s) no order confirmed`);
			return released;
		},

		toProduct(row: Model | ProductRow): Product {
			const r = plainRow<ProductRow>(row);
			return {
				id: r.id,
				sku: r.sku,
				name: r.name,
				description: r.description,
				category: r.category,
				priceCents: r.priceCents,
				currency: r.currency,
				stock: r.stock,
				createdAt: new Date(r.createdAt).toISOString(),
				updatedAt: new Date(r.updatedAt).toISOString(),
			};
		},

		/** Every cache miss and uncached read: one statement on the driver (lib/sql), not a model query. */
		async findProduct(this: ProductsThis, id: number): Promise<Product | null> {
			const { rows } = await this.sql<ProductRow>(`SELECT ${PRODUCT_COLUMNS} FROM products WHERE id = $1`, [id]);
			return rows.length > 0 ? this.toProduct(rows[0]) : null;
		},

		/**
		 * A page of the catalog and its total, as statements on the driver (lib/sql): a list's page
		 * and, when the page cannot tell it, a count; a search's page and total in one. They are
		 * written here for each shape of question (category or not, the kind of search, the sort),
		 * never built by the model per request. Through Sequelize's findAll and count, building the
		 * query and an instance of every row took 40-50% of the process's time on an uncached list.
		 * A search runs unprepared on PostgreSQL (SqlOptions): its plan must see the pattern.
		 */
		async listProducts(this: ProductsThis, params: ListParams): Promise<ListResult<Product>> {
			const { page, pageSize, q, category, sort } = params;
			const pg = this.dbDialect() === "postgres";
			const conditions: string[] = [];
			const values: unknown[] = [];
			const param = (value: unknown) => `$${values.push(value)}`;
			// How many products the column's statistics expect a PostgreSQL search to match; whether
			// the sample expects a SQLite search in most rows.
			let expected: number | undefined;
			let broad = false;
			if (category) conditions.push(`category = ${param(category)}`);
			if (q) {
				// Substring over name and description; % and _ in q match literally. PostgreSQL folds
				// case with lower() on both sides (Unicode-aware). SQLite's lower() knows only ASCII but
				// its LIKE already ignores ASCII case, so there the text is compared as written: "ÇAY"
				// finds "ÇAYDANLIK" and "cay" finds "Cay", though "çay" does not find "ÇAY".
				const escaped = q.replace(/[\\%_]/g, c => `\\${c}`);
				if (!pg) {
					broad = (this.searchStats?.share(q.toLowerCase()) ?? 0) >= BROAD_SHARE;
					const pattern = `%${escaped}%`;
					conditions.push(`(name LIKE ${param(pattern)} ESCAPE '\\' OR description LIKE ${param(pattern)} ESCAPE '\\')`);
				} else if (q.includes(SEARCH_SEPARATOR)) {
					// The stored column joins the two by this separator: such a text is matched column by column.
					const pattern = `%${escaped.toLowerCase()}%`;
					conditions.push(`(lower(name) LIKE ${param(pattern)} ESCAPE '\\' OR lower(description) LIKE ${param(pattern)} ESCAPE '\\')`);
				} else {
					// One stored column over both, served by one trigram index (migration
					// 0005-search-column). When one word of the text is rare, the index is asked for that
					// word alone and each row it finds is checked against the whole text (search.ts): the
					// same rows, without reading the posting lists of the words every product shares.
					const text = q.toLowerCase();
					const word = indexWord(text, this.searchStats?.current());
					expected = this.searchStats?.matches(text);
					conditions.push(
						word
							? `(${SEARCH_COLUMN} LIKE ${param(`%${word}%`)} AND strpos(${SEARCH_COLUMN}, ${param(text)}) > 0)`
							: `${SEARCH_COLUMN} LIKE ${param(`%${escaped.toLowerCase()}%`)} ESCAPE '\\'`,
					);
				}
			}
			const where = conditions.length ? ` WHERE ${conditions.join(" AND ")}` : "";
			const [column, direction] = SORTS[sort];
			const opts = { prepared: !q };
			if (!q || broad || (expected !== undefined && expected < page * pageSize)) {
				// The page alone, and the count only when the page cannot tell the total: a list walks
				// the sort column's index and stops at its page; so does a SQLite search the sample
				// expects in most rows, whose walk meets a page of matches soon. A PostgreSQL search
				// the statistics expect to end within this page reads its few matches, and its page
				// then tells the total; it sorts by a key no index serves (model.ts searchSortKey).
				const key = q && pg ? searchSortKey(column) : column;
				const query = { columns: PRODUCT_COLUMNS, from: `products${where}`, order: `${key} ${direction}, id ${direction}`, values, opts };
				return this.pageOf(query, page, pageSize, (r: ProductRow) => this.toProduct(r));
			}
			// Any other search reads every match for a full page anyway (the text is no sort order),
			// and the page cannot tell the total: the matches are found once, as ids and sort keys,
			// and both the page and the total come from them. As two statements the matches were
			// found twice: "product 1" over 100,000 products (11,112 matches) took 4.3-5.5 ms for the
			// page and 2.5-2.6 ms for its count, 4.2-5.2 ms as one; on SQLite over 10,000 (1,111
			// matches) 2.1-2.5 ms and 1.3-1.5 ms, 1.7-2.2 ms as one. For a search that ends within its
			// page the one statement costs more than the page alone (0.28-0.35 ms against 0.15-0.21
			// at one match of 100,000 on PostgreSQL), hence the statistics' guess above. On SQLite
			// the page alone walks the sort index until it has a page: through the whole table for
			// a rare text (2.4 ms against 1.4 as one), at once for a text in every row (0.1 ms and a
			// 0.8 ms count, against 3.5 as one), hence its sample's guess. Materialized, the matches
			// are never planned as a walk along the sort column's index either. Only a page past the
			// end, with no row to carry the total, counts on its own.
			const n = values.length;
			const order = (k: string, id: string) => `ORDER BY ${k} ${direction}, ${id} ${direction}`;
			const text =
				`WITH found AS MATERIALIZED (SELECT id, ${column} AS k FROM products${where}), ` +
				`shown AS (SELECT id, k FROM found ${order("k", "id")} LIMIT $${n + 1} OFFSET $${n + 2}) ` +
				`SELECT (SELECT count(*) FROM found) AS total, ${PRODUCT_COLUMNS} FROM shown JOIN products USING (id) ${order("shown.k", "shown.id")}`;
			const { rows } = await this.sql<ProductRow & { total: number | string }>(text, [...values, pageSize, (page - 1) * pageSize], undefined, opts);
			const count = async () => (rows.length ? Number(rows[0].total) : this.countOf(`products${where}`, values, opts));
			return countedPage(rows.map(r => this.toProduct(r)), page, pageSize, count);
		},
	},

	started: lifecycle<ProductsThis>(function () {
		this.reservations = new Reservations(this.sequelize, this.model, fn => this.transaction(fn));
		// The search column's sample: PostgreSQL's own (pg_stats), or on SQLite rows drawn at random.
		const read =
			this.dbDialect() === "postgres"
				? async () => (await this.sql<ColumnStats>(COLUMN_STATS_SQL, ["products", SEARCH_COLUMN])).rows[0]
				: async () => sqliteStats((await this.sql<{ text: string; n: number }>(SQLITE_SAMPLE_SQL)).rows);
		this.searchStats = new SearchStats(read, undefined, err => this.logger.warn(`Search statistics not read: ${(err as Error).message}`));
		if (this.settings.reservationSweepMs > 0) {
			this.sweepTimer = setInterval(() => {
				// One sweep at a time per node; a slow one is not stacked on.
				this.sweeping ??= this.sweepReservations()
					.catch(err => {
						this.logger.warn(`Reservation sweep failed: ${(err as Error).message}`);
						return 0;
					})
					.finally(() => (this.sweeping = undefined));
			}, this.settings.reservationSweepMs);
			this.sweepTimer.unref();
		}
	}),

	stopped: lifecycle<ProductsThis>(async function () {
		if (this.sweepTimer) clearInterval(this.sweepTimer);
		await this.sweeping;
	}),
};

export default ProductsService;
