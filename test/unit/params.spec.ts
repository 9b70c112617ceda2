/** lib/params countedPage: the total from the page when the page tells it, from a count otherwise. */
import { countedPage } from "../../lib/params";

describe("countedPage", () => {
	const counter = (total: number) => {
		const count = jest.fn(async () => total);
		return count;
	};

	it("takes the total from a first page that is not full, without counting", async () => {
		const count = counter(999);
		expect(await countedPage([1, 2, 3], 1, 20, count)).toEqual({ rows: [1, 2, 3], total: 3, page: 1, pageSize: 20, totalPages: 1 });
		expect(await countedPage([], 1, 20, count)).toEqual({ rows: [], total: 0, page: 1, pageSize: 20, totalPages: 0 });
		expect(await countedPage([7], 3, 20, count)).toEqual({ rows: [7], total: 41, page: 3, pageSize: 20, totalPages: 3 });
		expect(count).not.toHaveBeenCalled();
	});

	it("counts for a full page and for an empty page past the first", async () => {
		const full = counter(45);
		expect(await countedPage([1, 2], 1, 2, full)).toEqual({ rows: [1, 2], total: 45, page: 1, pageSize: 2, totalPages: 23 });
		const past = counter(45);
		expect(await countedPage([], 30, 2, past)).toEqual({ rows: [], total: 45, page: 30, pageSize: 2, totalPages: 23 });
		expect(full).toHaveBeenCalledTimes(1);
		expect(past).toHaveBeenCalledTimes(1);
	});
});
