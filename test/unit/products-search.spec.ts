/**
 * services/products/search.ts: which word of a search text the trigram index is asked for, from
 * PostgreSQL's sample of the column, and how that sample is kept.
 */
import { RARE_SHARE, SearchStats, estimateShare, expectedMatches, indexWord, sampleFromStats, searchWords, type SearchSample } from "../../services/products/search";

/** 100 bench-like values, each a hundredth of the rows. */
const bench: SearchSample[] = Array.from({ length: 100 }, (_, i) => ({ text: `bench product ${i * 997}\u001fa product seeded by the bench, number ${i * 997}`, share: 0.01 }));

describe("search words", () => {
	it("splits on what is not a letter or a digit and keeps words of three characters or more", () => {
		expect(searchWords("çaydanlık, 54321-ab x.yz bakır")).toEqual(["çaydanlık", "54321", "bakır"]);
		expect(searchWords("product 1")).toEqual(["product"]);
		expect(searchWords("%_ 12")).toEqual([]);
	});
});

describe("index word", () => {
	it("estimates a word's share of the rows from the sample", () => {
		expect(estimateShare("product", bench)).toBeCloseTo(1);
		expect(estimateShare("54321", bench)).toBe(0);
		expect(estimateShare("product 997\u001f", bench)).toBeCloseTo(0.01);
		expect(estimateShare("997", bench)).toBeCloseTo(0.02); // 997 and 9970
	});

	it("picks the rarest word when it is rare and is not the whole text", () => {
		expect(indexWord("bench product 54321", bench)).toBe("54321");
		expect(indexWord("product 54321 çaydanlık", bench)).toBe("çaydanlık"); // both unseen: the longer
		expect(indexWord("product 1", bench)).toBeUndefined(); // "1" gives the index nothing
		expect(indexWord("bench product", bench)).toBeUndefined(); // every word common
		expect(indexWord("54321", bench)).toBeUndefined(); // the text is the word
		expect(indexWord("product 54321", undefined)).toBeUndefined(); // no statistics yet
		expect(indexWord("product 54321", [])).toBeUndefined();
	});

	it("takes a word at a share just under RARE_SHARE and leaves one at it", () => {
		const sample = (share: number): SearchSample[] => [
			{ text: "product 4242", share },
			{ text: "product 1", share: 1 - share },
		];
		expect(indexWord("product 4242", sample(RARE_SHARE - 0.001))).toBe("4242");
		expect(indexWord("product 4242", sample(RARE_SHARE))).toBeUndefined();
	});
});

describe("sample from pg_stats", () => {
	it("gives each common value its frequency and each histogram bound an equal part of the rest", () => {
		const sample = sampleFromStats({ null_frac: 0.1, mcv: ["a", "b"], mcf: [0.3, 0.2], hist: ["c", "d", "e", "f"] });
		expect(sample?.map(s => s.text)).toEqual(["a", "b", "c", "d", "e", "f"]);
		expect(sample?.map(s => s.share)).toEqual([0.3, 0.2, 0.1, 0.1, 0.1, 0.1].map(n => expect.closeTo(n, 10)));
		expect(sampleFromStats({ null_frac: 0, mcv: null, mcf: null, hist: ["x", "y"] })?.map(s => s.share)).toEqual([0.5, 0.5]);
	});

	it("is undefined for a column not analyzed yet", () => {
		expect(sampleFromStats(undefined)).toBeUndefined();
		expect(sampleFromStats({ null_frac: 0, mcv: null, mcf: null, hist: null })).toBeUndefined();
	});
});

describe("expected matches", () => {
	it("is the sampled share of the rows holding the text, times the rows", () => {
		const sample: SearchSample[] = [
			{ text: "bench product 1", share: 0.5 },
			{ text: "bench product 2", share: 0.25 },
			{ text: "kettle", share: 0.25 },
		];
		expect(expectedMatches("product", sample, 1000)).toBe(750);
		expect(expectedMatches("product 2", sample, 1000)).toBe(250);
		expect(expectedMatches("teapot", sample, 1000)).toBe(0);
	});

	it("comes from the last read, and is unknown before one or without a row estimate", async () => {
		const stats = new SearchStats(async () => ({ null_frac: 0, mcv: ["kettle"], mcf: [0.1], hist: ["a kettle", "a pot"], rows: 1000 }), 60_000);
		expect(stats.matches("kettle")).toBeUndefined();
		await stats.refresh();
		// "kettle" 10% of the rows, "a kettle" half of the other 90%.
		expect(stats.matches("kettle")).toBeCloseTo(550);
		expect(stats.matches("pan")).toBe(0);
		const unanalyzed = new SearchStats(async () => ({ null_frac: 0, mcv: null, mcf: null, hist: ["a"], rows: -1 }), 60_000);
		await unanalyzed.refresh();
		expect(unanalyzed.matches("a")).toBeUndefined();
	});
});

describe("SearchStats", () => {
	it("reads in the background when due, one read at a time, and keeps the last sample when a read fails", async () => {
		let reads = 0;
		let fail = false;
		const errors: unknown[] = [];
		const stats = new SearchStats(
			async () => {
				reads++;
				if (fail) throw new Error("down");
				return { null_frac: 0, mcv: null, mcf: null, hist: [`read ${reads}`] };
			},
			1000,
			err => errors.push(err),
		);
		expect(stats.current()).toBeUndefined(); // the first search does not wait
		expect(stats.current()).toBeUndefined();
		await stats.refresh(); // joins the read under way
		expect(reads).toBe(1);
		expect(stats.current()?.[0].text).toBe("read 1"); // fresh: no new read
		expect(reads).toBe(1);

		fail = true;
		await stats.refresh();
		expect(reads).toBe(2);
		expect(errors).toHaveLength(1);
		expect(stats.current()?.[0].text).toBe("read 1");
	});

	it("reads again once the sample is older than its time to live", async () => {
		jest.useFakeTimers({ now: 0 });
		try {
			let reads = 0;
			const stats = new SearchStats(async () => ({ null_frac: 0, mcv: null, mcf: null, hist: [`read ${++reads}`] }), 1000);
			await stats.refresh();
			jest.setSystemTime(999);
			stats.current();
			expect(reads).toBe(1);
			jest.setSystemTime(1000);
			stats.current();
			expect(reads).toBe(2);
		} finally {
			jest.useRealTimers();
		}
	});
});
