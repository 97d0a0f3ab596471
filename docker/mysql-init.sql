-- The demo schema, and a replication user with only what tributary needs.
CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, city VARCHAR(32));
CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, total DECIMAL(10,2) NOT NULL,
                          status ENUM('new','paid','shipped') NOT NULL, created_at DATETIME(3) NOT NULL);
CREATE TABLE shop.order_items (order_id BIGINT NOT NULL, line INT NOT NULL, sku VARCHAR(16) NOT NULL,
                               qty INT NOT NULL, PRIMARY KEY (order_id, line));
INSERT INTO shop.customers VALUES (1, 'Ada', 'Oslo'), (2, 'Grace', 'Lima'), (3, 'Linus', 'Pune');
INSERT INTO shop.orders VALUES (1, 1, 12.50, 'paid', NOW(3)), (2, 2, 99.00, 'new', NOW(3)), (3, 1, 7.25, 'paid', NOW(3));
INSERT INTO shop.order_items VALUES (1, 1, 'SKU-1', 2), (1, 2, 'SKU-7', 1), (2, 1, 'SKU-3', 4), (3, 1, 'SKU-1', 1);
