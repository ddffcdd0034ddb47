"""The healthbook contract: Avro schemas, their models, the wire codec and the signed envelope."""
