#!/usr/bin/env node
import { run } from '../dist/bin.js';

process.exitCode = await run();
