// The tiny service's build: its source as it is, where the process contract looks for it.
import { cpSync } from "node:fs";

cpSync("src", "dist/src", { recursive: true });
