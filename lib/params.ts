/**
 * Validation schemas and shapes every service uses the same way (API.md): the list envelope and
 * its paging, and the order lines that orders takes from clients and products.reserve from orders.
 */

/** The largest value of a PostgreSQL integer column. */
export const MAX_INT = 2_147_483_647;

/** page >= 1 (default 1) and 1 <= pageSize <= 100 (default 20), from query strings too. */
export const pageParams = {
	page: { type: "number", integer: true, positive: true, max: 100_000, convert: true, default: 1 },
	pageSize: { type: "number", integer: true, min: 1, max: 100, convert: true, default: 20 },
} as const;

/** 1-100 lines of { productId, quantity }, nothing else. */
export const orderLinesParam = {
	type: "array",
	min: 1,
	max: 100,
	items: {
		type: "object",
		strict: true,
		props: {
			productId: { type: "number", integer: true, positive: true, max: MAX_INT },
			quantity: { type: "number", integer: true, min: 1, max: 10_000 },
		},
	},
} as const;

export interface Page<T> {
	rows: T[];
	total: number;
	page: number;
	pageSize: number;
	totalPages: number;
}

/** The envelope of every list: { rows, total, page, pageSize, totalPages }. */
export function page<T>(rows: T[], total: number, pageNo: number, pageSize: number): Page<T> {
	return { rows, total, page: pageNo, pageSize, totalPages: Math.ceil(total / pageSize) };
}

/**
 * One page of a list and its total, counting only when the page cannot tell: a page with fewer
 * rows than its size is the last one (total = the rows before it + its own), a full page or an
 * empty one past the first needs the count. The common search or short history then costs one
 * query instead of two (Sequelize's findAndCountAll always counts, over every matching row).
 */
export async function countedPage<T>(rows: T[], pageNo: number, pageSize: number, count: () => Promise<number>): Promise<Page<T>> {
	const last = rows.length < pageSize && (rows.length > 0 || pageNo === 1);
	const total = last ? (pageNo - 1) * pageSize + rows.length : await count();
	return page(rows, total, pageNo, pageSize);
}
