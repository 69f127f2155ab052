SELECT warden.publish('bench.lat.order', '{"order": 42}');
