SELECT warden.publish('bench.pub.order', '{"order": 42, "total": 99.5, "currency": "EUR"}');
