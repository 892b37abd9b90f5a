// An ES module handler (index.handler resolves to index.mjs).
export const handler = async (event, context) => ({ style: 'esm', input: event, function_name: context.functionName });
