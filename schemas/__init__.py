"""The contract: Avro schemas, the schema and topic catalogues, the wire codec, the visit model, the signed envelope."""
