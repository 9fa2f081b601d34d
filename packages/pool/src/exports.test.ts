import { expect, it } from "vitest";
import * as pool from "./index";

it("exports exactly the public API", () => {
  expect(Object.keys(pool).sort()).toEqual(
    ["MAX_TIMER_MS", "POOL_ERROR_CODES", "PoolError", "createPool", "isPoolError"].sort(),
  );
});
