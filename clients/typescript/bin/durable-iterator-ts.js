#!/usr/bin/env node
// The command line of @durable-iterator/client (see src/cli.ts). Built code: `npm run build`
// (npm install and npm ci run it through `prepare`).
import { run } from "../dist/src/cli.js";

await run(process.argv.slice(2));
