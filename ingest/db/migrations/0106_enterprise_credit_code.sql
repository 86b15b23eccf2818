-- The unified social credit code (统一社会信用代码, GB 32100-2015) by which provincial and national
-- platforms know an enterprise. The import and the API check its check character
-- (ingest/credit_code.py); the database keeps the form (18 characters of the code's alphabet)
-- and one enterprise per code. NULL until someone enters it (auto-registered enterprises).
ALTER TABLE enterprises ADD COLUMN credit_code text
    CONSTRAINT enterprises_credit_code_form CHECK (credit_code ~ '^[0-9A-HJ-NPQRTUWXY]{18}$');
CREATE UNIQUE INDEX enterprises_credit_code ON enterprises (credit_code);
